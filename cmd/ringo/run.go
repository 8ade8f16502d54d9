package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/sample"
	"github.com/ringo-ai/ringo/textgen"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// outputHelp explains where run and chat print what.
const outputHelp = `Output: the answer streams to stdout as it is generated. Reasoning
(thinking) is printed dimmed to stdout when stdout is a terminal; when
stdout is redirected it goes to stderr instead, so that stdout holds only
the answer. Tool calls (with --tools) are printed to stdout as one JSON
object per line. Special tokens are never printed. Set NO_COLOR to turn off
dimming. With --verbose a stats line (prompt and generated tokens, prefill
and decode speed) follows each answer on stderr.

Without --model the tiny embedded random-weight model is used: it shows the
whole pipeline working but its output is gibberish.`

func init() {
	rootCmd.AddCommand(newRunCmd(), newChatCmd())
}

// defaultTemperature is run's and chat's sampling temperature, which bench
// --sample draws at too.
const defaultTemperature = 0.6

// genFlags are the generation flags shared by run and chat.
type genFlags struct {
	maxTokens     int
	temperature   float32
	topP          float32
	topK          int
	minP          float32
	repeatPenalty float32
	seed          int64
	system        string
	think         bool
	noThink       bool
	tools         string
	verbose       bool
}

func (g *genFlags) register(cmd *cobra.Command, maxTokens int) {
	f := cmd.Flags()
	f.IntVar(&g.maxTokens, "max-tokens", maxTokens, "most tokens to generate per answer (0: until end of sequence or context)")
	f.Float32Var(&g.temperature, "temperature", defaultTemperature, "sampling temperature (0: greedy)")
	f.Float32Var(&g.topP, "top-p", 1, "nucleus sampling: keep the smallest set of tokens with this total probability (1: off)")
	f.IntVar(&g.topK, "top-k", 0, "keep the k most likely tokens (0: off)")
	f.Float32Var(&g.minP, "min-p", 0, "drop tokens less likely than this fraction of the most likely one (0: off)")
	f.Float32Var(&g.repeatPenalty, "repeat-penalty", 1, "penalty for tokens already in the prompt or output (1: off)")
	f.Int64Var(&g.seed, "seed", -1, "random seed for sampling (-1: random)")
	f.StringVar(&g.system, "system", "", "system prompt")
	f.BoolVar(&g.think, "think", false, "set the template variable enable_thinking to true")
	f.BoolVar(&g.noThink, "no-think", false, "set the template variable enable_thinking to false")
	f.StringVar(&g.tools, "tools", "", "JSON file with an array of OpenAI-style tool definitions offered to the model")
	f.BoolVarP(&g.verbose, "verbose", "v", false, "print a stats line to stderr after each answer")
}

// validate checks the flag values.
func (g *genFlags) validate() error {
	if g.maxTokens < 0 {
		return errors.New("--max-tokens must not be negative")
	}
	if g.temperature < 0 {
		return errors.New("--temperature must not be negative")
	}
	if g.think && g.noThink {
		return errors.New("--think and --no-think exclude each other")
	}
	return nil
}

// thinking returns the enable_thinking setting (nil: template default).
func (g *genFlags) thinking() *bool {
	switch {
	case g.think:
		return ptr(true)
	case g.noThink:
		return ptr(false)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// baseSeed returns the seed to use (a random one for -1).
func (g *genFlags) baseSeed() uint64 {
	if g.seed < 0 {
		return rand.Uint64()
	}
	return uint64(g.seed)
}

// params returns the sampler parameters with the given seed.
func (g *genFlags) params(seed uint64) sample.Params {
	return sample.Params{
		Temperature:       g.temperature,
		TopK:              g.topK,
		TopP:              g.topP,
		MinP:              g.minP,
		RepetitionPenalty: g.repeatPenalty,
		Seed:              seed,
	}
}

// loadTools reads the --tools file.
func (g *genFlags) loadTools() ([]json.RawMessage, error) {
	if g.tools == "" {
		return nil, nil
	}
	b, err := os.ReadFile(g.tools)
	if err != nil {
		return nil, fmt.Errorf("--tools: %w", err)
	}
	var tools []json.RawMessage
	if err := json.Unmarshal(b, &tools); err != nil {
		return nil, fmt.Errorf("--tools %s: want a JSON array of tool objects: %w", g.tools, err)
	}
	return tools, nil
}

// loadRunner loads --model, or the embedded default model when it is not
// given (saying so on stderr).
func loadRunner(cmd *cobra.Command, mf *modelFlags) (*textgen.Runner, error) {
	dir := mf.model
	if dir == "" {
		d, err := defaultmodel.Dir()
		if err != nil {
			return nil, err
		}
		dir = d
		fmt.Fprintf(cmd.ErrOrStderr(), "ringo: no --model given, using the embedded %s model (random weights: expect gibberish)\n", defaultmodel.Name)
	}
	r, err := textgen.Load(dir, mf.options())
	if err != nil {
		return nil, err
	}
	if l, ok := r.Model.(*engine.Loaded); ok {
		for _, n := range l.Notes {
			fmt.Fprintf(cmd.ErrOrStderr(), "ringo: note: %s\n", n)
		}
	}
	return r, nil
}

func newRunCmd() *cobra.Command {
	var mf modelFlags
	var gf genFlags
	var raw bool
	cmd := &cobra.Command{
		Use:   "run [flags] [PROMPT | -]",
		Short: "Answer one prompt, streaming the reply",
		Long: `run renders PROMPT as a user message with the model's chat template and
streams the model's answer. The prompt is read from stdin when it is "-", or
when it is absent and stdin is not a terminal (one trailing newline is
dropped); several arguments are joined with spaces. With --raw the prompt is
tokenized as it is (special tokens written in it are recognised), without
chat template or output parsing.

` + outputHelp,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := gf.validate(); err != nil {
				return err
			}
			if raw && (gf.system != "" || gf.think || gf.noThink || gf.tools != "") {
				return errors.New("--raw cannot be combined with --system, --think, --no-think or --tools")
			}
			prompt, err := readPrompt(cmd, args)
			if err != nil {
				return err
			}
			tools, err := gf.loadTools()
			if err != nil {
				return err
			}
			r, err := loadRunner(cmd, &mf)
			if err != nil {
				return err
			}
			defer r.Close()

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			p := newPrinter(cmd.OutOrStdout(), cmd.ErrOrStderr())
			opts := textgen.Options{MaxTokens: gf.maxTokens, Sampling: gf.params(gf.baseSeed()), Raw: raw, OnEvent: p.event}
			var res textgen.Result
			if raw {
				ids := r.Encode(prompt)
				if len(ids) == 0 {
					return errors.New("empty prompt")
				}
				st := r.Model.NewState()
				defer st.Free()
				res, err = r.Generate(ctx, st, nil, ids, false, false, opts)
			} else {
				s := r.NewSession()
				defer s.Close()
				s.System, s.Thinking, s.Tools = gf.system, gf.thinking(), tools
				res, err = s.Send(ctx, prompt, opts)
			}
			p.finish()
			if gf.verbose {
				printStats(cmd.ErrOrStderr(), &res)
			}
			if interrupted(ctx, err) {
				return errors.New("interrupted")
			}
			return err
		},
	}
	mf.register(cmd, "model directory (Hugging Face layout; default: the embedded tiny model)")
	gf.register(cmd, 512)
	cmd.Flags().BoolVar(&raw, "raw", false, "tokenize the prompt as is: no chat template, no output parsing")
	return cmd
}

// readPrompt returns the prompt from the arguments or stdin.
func readPrompt(cmd *cobra.Command, args []string) (string, error) {
	fromStdin := len(args) == 1 && args[0] == "-"
	if len(args) == 0 {
		if isTerminal(cmd.InOrStdin()) {
			return "", errors.New("no prompt: give it as an argument or on stdin")
		}
		fromStdin = true
	}
	if !fromStdin {
		return strings.Join(args, " "), nil
	}
	b, err := io.ReadAll(cmd.InOrStdin())
	if err != nil {
		return "", fmt.Errorf("read prompt: %w", err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if strings.TrimSpace(s) == "" {
		return "", errors.New("empty prompt on stdin")
	}
	return s, nil
}

// printStats writes the stats line of an answer.
func printStats(w io.Writer, res *textgen.Result) {
	why := string(res.Finish)
	if why == "" {
		why = "interrupted"
	}
	fmt.Fprintf(w, "[%s; %s]\n", res.Stats, why)
}

// isTerminal reports whether v is an *os.File attached to a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// colorOK reports whether ANSI styling may be written to v.
func colorOK(v any) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return isTerminal(v)
}

const (
	ansiDim   = "\x1b[2m"
	ansiReset = "\x1b[0m"
)

// lineWriter remembers whether the last byte written was a newline.
type lineWriter struct {
	w      io.Writer
	dim    bool
	wrote  bool
	lastNL bool
}

func (l *lineWriter) write(s string) {
	if s == "" {
		return
	}
	if l.dim {
		io.WriteString(l.w, ansiDim+s+ansiReset)
	} else {
		io.WriteString(l.w, s)
	}
	l.wrote = true
	l.lastNL = strings.HasSuffix(s, "\n")
}

// endLine starts a new line unless at the start of one.
func (l *lineWriter) endLine() {
	if l.wrote && !l.lastNL {
		io.WriteString(l.w, "\n")
		l.lastNL = true
	}
}

// printer prints the events of one answer (see outputHelp).
type printer struct {
	content   *lineWriter
	reasoning *lineWriter
	shared    bool           // reasoning and content go to the same writer
	last      chat.EventKind // kind of the last printed event
}

func newPrinter(out, errOut io.Writer) *printer {
	p := &printer{content: &lineWriter{w: out}}
	if isTerminal(out) {
		p.reasoning = &lineWriter{w: out, dim: colorOK(out)}
		p.shared = true
	} else {
		p.reasoning = &lineWriter{w: errOut, dim: colorOK(errOut)}
	}
	return p
}

// event prints one parsed output event.
func (p *printer) event(ev chat.Event) {
	switch ev.Kind {
	case chat.EventReasoning:
		if p.shared && p.last != chat.EventReasoning && p.last != 0 {
			p.content.endLine()
		}
		p.reasoning.write(ev.Text)
	case chat.EventContent:
		if p.last == chat.EventReasoning {
			p.reasoning.endLine()
			if p.shared {
				io.WriteString(p.content.w, "\n") // a blank line after the reasoning
			}
		}
		p.content.write(ev.Text)
	case chat.EventToolCall:
		if p.last == chat.EventReasoning {
			p.reasoning.endLine()
		}
		p.content.endLine()
		b, err := json.Marshal(ev.ToolCall)
		if err != nil {
			return
		}
		p.content.write(string(b) + "\n")
	}
	p.last = ev.Kind
}

// finish ends the open lines.
func (p *printer) finish() {
	p.reasoning.endLine()
	p.content.endLine()
}

// interrupted reports whether err is a cancellation caused by ctx.
func interrupted(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled)
}
