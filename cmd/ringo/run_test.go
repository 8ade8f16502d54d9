package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/spf13/cobra"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ringo-cmd-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", dir) // where the default model is unpacked
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// execute runs cmd with args and stdin, returning stdout and stderr.
func execute(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestRunDefaultModel(t *testing.T) {
	// Through the root command, as a user would call it.
	out, errOut, err := execute(t, rootCmd, "", "run", "--max-tokens", "12", "--seed", "1", "--threads", "2", "Hello")
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut)
	}
	if strings.TrimSpace(out) == "" {
		t.Fatalf("run printed nothing; stderr: %s", errOut)
	}
	if !strings.Contains(errOut, defaultmodel.Name) {
		t.Errorf("stderr does not mention the default model: %q", errOut)
	}
	if strings.Contains(out, "<|role_end|>") || strings.Contains(out, "<role>") {
		t.Errorf("special tokens printed: %q", out)
	}
}

func TestRunGreedyIsDeterministic(t *testing.T) {
	args := []string{"--temperature", "0", "--max-tokens", "16", "--verbose", "What is Go?"}
	a, errA, err := execute(t, newRunCmd(), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := execute(t, newRunCmd(), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("greedy runs differ:\n%q\n%q", a, b)
	}
	if !regexp.MustCompile(`\[prompt \d+ tokens, prefill [\d.]+ tok/s; 16 generated, decode [\d.]+ tok/s; length\]`).MatchString(errA) {
		t.Fatalf("no stats line in stderr: %q", errA)
	}
	// The same prompt on stdin gives the same answer.
	c, _, err := execute(t, newRunCmd(), "What is Go?\n", append(args[:len(args)-1:len(args)-1], "-")...)
	if err != nil {
		t.Fatal(err)
	}
	if c != a {
		t.Fatalf("stdin prompt gave %q, argument %q", c, a)
	}
	// Absent argument with non-terminal stdin reads stdin too.
	d, _, err := execute(t, newRunCmd(), "What is Go?", args[:len(args)-1]...)
	if err != nil || d != a {
		t.Fatalf("implicit stdin prompt gave %q, %v; want %q", d, err, a)
	}
}

func TestRunRaw(t *testing.T) {
	out, errOut, err := execute(t, newRunCmd(), "", "--raw", "--max-tokens", "8", "--seed", "3", "<role>HUMAN</role>Hi<|role_end|><role>ASSISTANT</role>")
	if err != nil {
		t.Fatalf("%v; stderr %s", err, errOut)
	}
	if strings.TrimSpace(out) == "" {
		t.Fatal("raw run printed nothing")
	}
	if _, _, err := execute(t, newRunCmd(), "", "--raw", "--system", "x", "Hi"); err == nil {
		t.Fatal("--raw with --system accepted")
	}
	if _, _, err := execute(t, newRunCmd(), "", "--think", "--no-think", "Hi"); err == nil {
		t.Fatal("--think with --no-think accepted")
	}
	if _, _, err := execute(t, newRunCmd(), "\n"); err == nil {
		t.Fatal("empty stdin prompt accepted")
	}
}

func TestRunTools(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tools.json")
	tools := `[{"type":"function","function":{"name":"now","description":"current time","parameters":{"type":"object","properties":{}}}}]`
	if err := os.WriteFile(f, []byte(tools), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := execute(t, newRunCmd(), "", "--tools", f, "--think", "--max-tokens", "4", "Time?"); err != nil {
		t.Fatalf("%v; stderr %s", err, errOut)
	}
	if err := os.WriteFile(f, []byte(`{"not":"a list"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, newRunCmd(), "", "--tools", f, "Time?"); err == nil {
		t.Fatal("bad --tools file accepted")
	}
}

func TestChatScript(t *testing.T) {
	out, errOut, err := execute(t, rootCmd, "hello\n/think on\nagain\n/reset\n/think off\n/bogus\n/help\nbye\n",
		"chat", "--max-tokens", "10", "--seed", "2", "--verbose")
	if err != nil {
		t.Fatalf("chat: %v\nstderr: %s", err, errOut)
	}
	if strings.TrimSpace(out) == "" {
		t.Fatal("chat printed no answers")
	}
	for _, want := range []string{"(thinking: on)", "(conversation cleared)", "(thinking: off)", "unknown command /bogus", "/think on|off"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	stats := regexp.MustCompile(`\[prompt (\d+) tokens( \((\d+) cached\))?,`).FindAllStringSubmatch(errOut, -1)
	if len(stats) != 3 {
		t.Fatalf("want 3 stats lines, got %d:\n%s", len(stats), errOut)
	}
	if stats[0][2] != "" || stats[1][2] == "" || stats[2][2] != "" {
		t.Fatalf("cache use per turn: %q %q %q (want none, some, none after /reset)", stats[0][0], stats[1][0], stats[2][0])
	}
}

func TestChatExitCommand(t *testing.T) {
	out, errOut, err := execute(t, newChatCmd(), "/exit\nnot answered\n", "--max-tokens", "4", "--verbose")
	if err != nil {
		t.Fatal(err)
	}
	if out != "" || strings.Contains(errOut, "[prompt") {
		t.Fatalf("answered after /exit: out %q err %q", out, errOut)
	}
}

// interruptingWriter sends an interrupt on the first write.
type interruptingWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sig  chan os.Signal
	sent bool
}

func (w *interruptingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.sent {
		w.sent = true
		w.sig <- os.Interrupt
	}
	return w.buf.Write(p)
}

func TestChatInterrupt(t *testing.T) {
	dir, err := defaultmodel.Dir()
	if err != nil {
		t.Fatal(err)
	}
	gf := genFlags{maxTokens: 200, temperature: 0}
	r, err := loadRunner(&cobra.Command{}, &modelFlags{model: dir, threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := r.NewSession()
	defer s.Close()
	sig := make(chan os.Signal, 1)
	out := &interruptingWriter{sig: sig}
	var errOut bytes.Buffer
	c := &chatREPL{sess: s, gf: &gf, in: strings.NewReader("first\nsecond\n"), out: out, errOut: &errOut, interrupts: sig}
	if err := c.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Count(errOut.String(), "[interrupted]") != 1 {
		t.Fatalf("want one interruption, stderr:\n%s", errOut.String())
	}
	if len(s.Messages) != 4 || s.Messages[1].Content == "" {
		t.Fatalf("history: %+v", s.Messages)
	}

	// Ctrl-C twice at the prompt quits; once only prints a hint.
	sig2 := make(chan os.Signal, 2)
	sig2 <- os.Interrupt
	sig2 <- os.Interrupt
	pr, pw := ioPipe()
	defer pr.Close()
	defer pw.Close()
	errOut.Reset()
	c2 := &chatREPL{sess: s, gf: &gf, in: pr, out: &bytes.Buffer{}, errOut: &errOut, interrupts: sig2}
	if err := c2.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "Ctrl-C again") {
		t.Fatalf("no hint after the first Ctrl-C: %q", errOut.String())
	}
}

// ioPipe returns a reader that never delivers data (until the writer is closed).
func ioPipe() (*os.File, *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	return r, w
}

func TestPrinter(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newPrinter(&out, &errOut)
	for _, ev := range []chat.Event{
		{Kind: chat.EventReasoning, Text: "Think"},
		{Kind: chat.EventReasoning, Text: "ing."},
		{Kind: chat.EventContent, Text: "Ans"},
		{Kind: chat.EventContent, Text: "wer."},
		{Kind: chat.EventToolCall, ToolCall: &chat.ToolCall{ID: "call_1", Type: "function", Function: chat.FunctionCall{Name: "f", Arguments: `{"a":1}`}}},
	} {
		p.event(ev)
	}
	p.finish()
	// Not a terminal: reasoning goes to stderr, undimmed.
	if got := errOut.String(); got != "Thinking.\n" {
		t.Fatalf("stderr = %q", got)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 3 || lines[0] != "Answer." || lines[2] != "" {
		t.Fatalf("stdout = %q", out.String())
	}
	var tc chat.ToolCall
	if err := json.Unmarshal([]byte(lines[1]), &tc); err != nil || tc.Function.Name != "f" || tc.Function.Arguments != `{"a":1}` {
		t.Fatalf("tool call line %q: %v", lines[1], err)
	}
}

func TestPrinterShared(t *testing.T) {
	var out bytes.Buffer
	p := &printer{content: &lineWriter{w: &out}, reasoning: &lineWriter{w: &out, dim: true}, shared: true}
	p.event(chat.Event{Kind: chat.EventReasoning, Text: "hmm"})
	p.event(chat.Event{Kind: chat.EventContent, Text: "yes"})
	p.finish()
	if got, want := out.String(), ansiDim+"hmm"+ansiReset+"\n\nyes\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
