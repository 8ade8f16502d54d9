package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/textgen"
	"github.com/spf13/cobra"
)

// chatHelp lists the REPL commands.
const chatHelp = `Commands:
  /reset          forget the conversation (the system prompt stays)
  /think on|off   set enable_thinking for the next answers (/think: show it)
  /system TEXT    set the system prompt (/system: clear it)
  /help           show this help
  /exit, /quit    quit (or Ctrl-D)
Ctrl-C stops an answer; at the prompt, press it twice to quit.`

func newChatCmd() *cobra.Command {
	var mf modelFlags
	var gf genFlags
	cmd := &cobra.Command{
		Use:   "chat [flags]",
		Short: "Chat with a model in an interactive multi-turn session",
		Long: `chat reads user messages line by line from stdin and streams the model's
answers. The conversation history is kept, and so is the model state: each
turn feeds only the tokens the conversation added since the last one.

` + chatHelp + `

` + outputHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := gf.validate(); err != nil {
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
			sigc := make(chan os.Signal, 1)
			signal.Notify(sigc, os.Interrupt)
			defer signal.Stop(sigc)
			s := r.NewSession()
			defer s.Close()
			s.System, s.Thinking, s.Tools = gf.system, gf.thinking(), tools
			c := &chatREPL{
				sess:        s,
				gf:          &gf,
				seed:        gf.baseSeed(),
				in:          cmd.InOrStdin(),
				out:         cmd.OutOrStdout(),
				errOut:      cmd.ErrOrStderr(),
				interrupts:  sigc,
				interactive: isTerminal(cmd.InOrStdin()),
			}
			return c.run(cmd.Context())
		},
	}
	mf.register(cmd, "model directory (Hugging Face layout; default: the embedded tiny model)")
	gf.register(cmd, 2048)
	return cmd
}

// chatREPL is the read-answer loop of ringo chat.
type chatREPL struct {
	sess        *textgen.Session
	gf          *genFlags
	seed        uint64
	turn        uint64
	in          io.Reader
	out, errOut io.Writer
	interrupts  <-chan os.Signal
	interactive bool // stdin is a terminal: show a prompt
}

type inputLine struct {
	text string
	err  error
}

// readLines sends the lines of r (without line ends) and then the read
// error (io.EOF at the end) until done is closed.
func readLines(r io.Reader, done <-chan struct{}) <-chan inputLine {
	ch := make(chan inputLine)
	go func() {
		br := bufio.NewReader(r)
		for {
			s, err := br.ReadString('\n')
			if s != "" {
				select {
				case ch <- inputLine{text: strings.TrimRight(s, "\r\n")}:
				case <-done:
					return
				}
			}
			if err != nil {
				select {
				case ch <- inputLine{err: err}:
				case <-done:
				}
				return
			}
		}
	}()
	return ch
}

func (c *chatREPL) run(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	lines := readLines(c.in, done)
	if c.interactive {
		fmt.Fprintln(c.errOut, "Type a message, /help for commands, Ctrl-D to quit.")
	}
	ctrlC := false // Ctrl-C was pressed at the prompt
	for {
		if c.interactive {
			io.WriteString(c.out, ">>> ")
		}
		var line inputLine
		select {
		case <-ctx.Done():
			return nil
		case <-c.interrupts:
			if ctrlC {
				fmt.Fprintln(c.out)
				return nil
			}
			ctrlC = true
			fmt.Fprintln(c.out)
			fmt.Fprintln(c.errOut, "(press Ctrl-C again, type /exit or press Ctrl-D to quit)")
			continue
		case line = <-lines:
		}
		if line.err != nil {
			if c.interactive {
				fmt.Fprintln(c.out)
			}
			if errors.Is(line.err, io.EOF) {
				return nil
			}
			return line.err
		}
		ctrlC = false
		text := strings.TrimSpace(line.text)
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "/") {
			if quit := c.command(text); quit {
				return nil
			}
			continue
		}
		c.answer(ctx, text)
	}
}

// command runs a /command and reports whether to quit.
func (c *chatREPL) command(text string) (quit bool) {
	name, arg, _ := strings.Cut(text, " ")
	arg = strings.TrimSpace(arg)
	switch name {
	case "/exit", "/quit", "/bye":
		return true
	case "/reset", "/clear":
		c.sess.Reset()
		fmt.Fprintln(c.errOut, "(conversation cleared)")
	case "/think":
		switch strings.ToLower(arg) {
		case "on", "true", "1":
			c.sess.Thinking = ptr(true)
		case "off", "false", "0":
			c.sess.Thinking = ptr(false)
		case "":
		default:
			fmt.Fprintln(c.errOut, "usage: /think on|off")
			return false
		}
		state := "template default"
		if c.sess.Thinking != nil {
			state = map[bool]string{true: "on", false: "off"}[*c.sess.Thinking]
		}
		fmt.Fprintf(c.errOut, "(thinking: %s)\n", state)
	case "/system":
		c.sess.System = arg
		if arg == "" {
			fmt.Fprintln(c.errOut, "(system prompt cleared)")
		} else {
			fmt.Fprintln(c.errOut, "(system prompt set)")
		}
	case "/help", "/?":
		fmt.Fprintln(c.errOut, chatHelp)
	default:
		fmt.Fprintf(c.errOut, "unknown command %s (/help lists them)\n", name)
	}
	return false
}

// answer sends one user message and streams the reply; Ctrl-C cancels it.
func (c *chatREPL) answer(ctx context.Context, text string) {
	genCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatch := make(chan struct{})
	watched := make(chan bool, 1)
	go func() {
		select {
		case <-c.interrupts:
			cancel()
			watched <- true
		case <-stopWatch:
			watched <- false
		}
	}()
	p := newPrinter(c.out, c.errOut)
	opts := textgen.Options{
		MaxTokens: c.gf.maxTokens,
		Sampling:  c.gf.params(c.seed + c.turn),
		OnEvent:   p.event,
	}
	c.turn++
	res, err := c.sess.Send(genCtx, text, opts)
	close(stopWatch)
	byCtrlC := <-watched
	p.finish()
	switch {
	case err != nil && byCtrlC && errors.Is(err, context.Canceled):
		fmt.Fprintln(c.errOut, "[interrupted]")
	case err != nil:
		fmt.Fprintln(c.errOut, "error:", err)
	case res.Finish == engine.FinishLength && res.Stats.GeneratedTokens == 0:
		fmt.Fprintln(c.errOut, "[context full: /reset to start over]")
	case res.Finish == engine.FinishLength:
		fmt.Fprintln(c.errOut, "[stopped: token limit]")
	}
	if c.gf.verbose {
		printStats(c.errOut, &res)
	}
}
