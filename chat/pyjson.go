package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// jsonToValue decodes JSON text into a jinja value, keeping object key
// order (as Python's json.loads does) and the int/float distinction.
func jsonToValue(data []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("decode JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Undefined(), fmt.Errorf("decode JSON: trailing data")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := jinja.NewDict()
			d := v.AsDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				k, ok := kt.(string)
				if !ok {
					return jinja.Undefined(), fmt.Errorf("object key is not a string")
				}
				ev, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.Set(k, ev)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return v, nil
		case '[':
			var items []jinja.Value
			for dec.More() {
				ev, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, ev)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return jinja.NewList(items), nil
		}
		return jinja.Undefined(), fmt.Errorf("unexpected %v", t)
	case json.Number:
		return jinja.FromGoValue(t), nil
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	}
	return jinja.Undefined(), fmt.Errorf("unexpected token %v", tok)
}

// goToValue converts an extra template variable.
func goToValue(v any) (jinja.Value, error) {
	switch x := v.(type) {
	case jinja.Value:
		return x, nil
	case json.RawMessage:
		return jsonToValue(x)
	}
	return jinja.FromGoValue(v), nil
}

// pyTojsonFilter is the tojson filter with the output of transformers'
// version: json.dumps(x, ensure_ascii=False, indent=indent,
// separators=separators, sort_keys=sort_keys).
func pyTojsonFilter(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.NewString(""), nil
	}
	e := pyEncoder{item: ", ", key: ": "}
	if ind, ok := kwargs["indent"]; ok && ind.IsInt() {
		e.indent = strings.Repeat(" ", int(ind.AsInt()))
		e.useIndent = true
		e.item = ","
	} else if ok && ind.IsString() {
		e.indent = ind.AsString()
		e.useIndent = true
		e.item = ","
	}
	if sep, ok := kwargs["separators"]; ok && sep.IsList() {
		items := sep.AsList().Items
		if len(items) != 2 || !items[0].IsString() || !items[1].IsString() {
			return jinja.Undefined(), fmt.Errorf("tojson: separators must be two strings")
		}
		e.item, e.key = items[0].AsString(), items[1].AsString()
	}
	if sk, ok := kwargs["sort_keys"]; ok {
		e.sortKeys = sk.IsTruthy()
	}
	var sb strings.Builder
	if err := e.encode(&sb, args[0], 0); err != nil {
		return jinja.Undefined(), fmt.Errorf("tojson: %w", err)
	}
	return jinja.NewString(sb.String()), nil
}

type pyEncoder struct {
	item, key string
	indent    string
	useIndent bool
	sortKeys  bool
}

func (e *pyEncoder) newline(sb *strings.Builder, level int) {
	sb.WriteByte('\n')
	for i := 0; i < level; i++ {
		sb.WriteString(e.indent)
	}
}

func (e *pyEncoder) encode(sb *strings.Builder, v jinja.Value, level int) error {
	switch {
	case v.IsUndefined(), v.IsNone():
		sb.WriteString("null")
	case v.IsBool():
		if v.AsBool() {
			sb.WriteString("true")
		} else {
			sb.WriteString("false")
		}
	case v.IsInt():
		sb.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		sb.WriteString(pyFloatRepr(v.AsFloat()))
	case v.IsString():
		writePyJSONString(sb, v.AsString())
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			sb.WriteString("[]")
			return nil
		}
		sb.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				sb.WriteString(e.item)
			}
			if e.useIndent {
				e.newline(sb, level+1)
			}
			if err := e.encode(sb, it, level+1); err != nil {
				return err
			}
		}
		if e.useIndent {
			e.newline(sb, level)
		}
		sb.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if len(keys) == 0 {
			sb.WriteString("{}")
			return nil
		}
		if e.sortKeys {
			keys = append([]string(nil), keys...)
			sort.Strings(keys)
		}
		sb.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				sb.WriteString(e.item)
			}
			if e.useIndent {
				e.newline(sb, level+1)
			}
			writePyJSONString(sb, k)
			sb.WriteString(e.key)
			val, _ := d.Get(k)
			if err := e.encode(sb, val, level+1); err != nil {
				return err
			}
		}
		if e.useIndent {
			e.newline(sb, level)
		}
		sb.WriteByte('}')
	default:
		return fmt.Errorf("cannot encode %s", v.String())
	}
	return nil
}

// writePyJSONString writes s as json.dumps(s, ensure_ascii=False) does.
func writePyJSONString(sb *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	sb.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, w := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && w == 1 {
				sb.WriteString("\uFFFD")
			} else {
				sb.WriteString(s[i : i+w])
			}
			i += w
			continue
		}
		switch c {
		case '"':
			sb.WriteString(`\"`)
		case '\\':
			sb.WriteString(`\\`)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		case '\b':
			sb.WriteString(`\b`)
		case '\f':
			sb.WriteString(`\f`)
		default:
			if c < 0x20 {
				sb.WriteString(`\u00`)
				sb.WriteByte(hex[c>>4])
				sb.WriteByte(hex[c&15])
			} else {
				sb.WriteByte(c)
			}
		}
		i++
	}
	sb.WriteByte('"')
}

// pyFloatRepr formats f as Python's float repr (as json.dumps does).
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	digits := strings.Replace(mant, ".", "", 1)
	var out string
	if exp >= -4 && exp < 16 {
		out = strconv.FormatFloat(math.Abs(f), 'f', -1, 64)
		if !strings.Contains(out, ".") {
			out += ".0"
		}
	} else {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign = "-"
			exp = -exp
		}
		out = fmt.Sprintf("%se%s%02d", m, sign, exp)
	}
	if neg {
		out = "-" + out
	}
	return out
}
