package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/server"
	"github.com/ringo-ai/ringo/textgen"
	"github.com/spf13/cobra"
)

func init() {
	var mf modelFlags
	var (
		host, apiKey, name    string
		port, maxBatch        int
		maxQueue, ctxLen      int
		prefillChunk, cacheMB int
		grace                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve [--model DIR] [--host 127.0.0.1] [--port 8080]",
		Short: "Serve the OpenAI API (chat and text completions) with continuous batching",
		Long: `serve runs an OpenAI-compatible HTTP server: POST /v1/chat/completions,
POST /v1/completions, GET /v1/models, GET /health and GET /metrics
(Prometheus). Requests are batched continuously: running sequences advance
together in every forward pass and new requests join between passes. Model
states at prompt boundaries and at the end of generation are kept in an LRU
prefix cache (--cache-mb) so follow-up turns prefill only their new tokens.
Without --model the tiny embedded random-weight model is served.

SIGINT or SIGTERM stops accepting requests and waits up to
--shutdown-timeout for running requests before cancelling them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d out of range", port)
			}
			if maxBatch < 1 || maxQueue < 1 || prefillChunk < 1 || ctxLen < 0 || cacheMB < 0 {
				return errors.New("--max-batch, --max-queue and --prefill-chunk must be positive; --ctx and --cache-mb not negative")
			}
			if apiKey == "" {
				apiKey = os.Getenv("RINGO_API_KEY")
			}
			dir, served := mf.model, name
			if dir == "" {
				d, err := defaultmodel.Dir()
				if err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				dir = d
				if served == "" {
					served = defaultmodel.Name
				}
			}
			if served == "" {
				served = strings.TrimSuffix(filepath.Base(filepath.Clean(dir)), ".gguf")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			o := mf.options()
			o.Serving = true // shorter prefill passes on a GPU: other streams keep decoding between them
			m, err := engine.Load(dir, o)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			defer m.Close()
			for _, n := range m.Notes {
				log.Warn(n)
			}
			tok, tmpl, err := textgen.LoadText(dir)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			srv, err := server.New(server.Options{
				Model:        m,
				Tokenizer:    tok,
				Template:     tmpl,
				ModelName:    served,
				MaxBatch:     maxBatch,
				MaxQueue:     maxQueue,
				MaxContext:   ctxLen,
				PrefillChunk: prefillChunk,
				CacheBytes:   int64(cacheMB) << 20,
				APIKey:       apiKey,
				Logger:       log,
			})
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			// the first request should not pay the first passes' one-time costs
			t0 := time.Now()
			if err := m.Warm(cmd.Context()); err != nil {
				srv.Close()
				return fmt.Errorf("serve: %w", err)
			}
			log.Info("warmed up", "seconds", time.Since(t0).Seconds())
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				srv.Close()
				return fmt.Errorf("serve: %w", err)
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			log.Info("serving", "model", served, "dir", dir, "addr", "http://"+ln.Addr().String(),
				"max_batch", maxBatch, "max_queue", maxQueue, "cache_mb", cacheMB)
			select {
			case err := <-errc:
				srv.Close()
				return fmt.Errorf("serve: %w", err)
			case <-ctx.Done():
			}
			stop() // a second signal kills the process
			log.Info("shutting down", "timeout", grace)
			sctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			// Stop accepting and let handlers finish; the server drains its
			// sequences within the same deadline.
			go srv.Shutdown(sctx)
			if err := hs.Shutdown(sctx); err != nil {
				log.Warn("cancelling in-flight requests", "err", err)
				srv.Close()
				// cancelled handlers end their responses (streams get an
				// error event) before the connections are closed
				cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
				if hs.Shutdown(cctx) != nil {
					hs.Close()
				}
				ccancel()
			}
			srv.Close()
			log.Info("stopped")
			return nil
		},
	}
	mf.register(cmd, "model directory or .gguf file (default: the embedded tiny random model)")
	f := cmd.Flags()
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	f.IntVar(&port, "port", 8080, "TCP port")
	f.IntVar(&maxBatch, "max-batch", server.DefaultMaxBatch, "most sequences decoded together")
	f.IntVar(&maxQueue, "max-queue", server.DefaultMaxQueue, "most requests waiting for a batch slot (more get HTTP 429)")
	f.IntVar(&ctxLen, "ctx", 0, "context length: prompt plus generated tokens (0: the model's)")
	f.IntVar(&prefillChunk, "prefill-chunk", server.DefaultPrefillChunk, "most prompt tokens prefilled per forward pass")
	f.IntVar(&cacheMB, "cache-mb", 1024, "memory bound of the prefix state cache in MiB (0: off)")
	f.StringVar(&apiKey, "api-key", "", "require Authorization: Bearer KEY on /v1/ (env RINGO_API_KEY)")
	f.StringVar(&name, "name", "", "served model id (default: the model directory name)")
	f.DurationVar(&grace, "shutdown-timeout", 30*time.Second, "how long to wait for running requests on shutdown")
	rootCmd.AddCommand(cmd)
}
