package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ringo-ai/ringo/hub"
	"github.com/spf13/cobra"
)

// pullFlags holds the flags of the pull command.
var pullFlags struct {
	revision string
	dir      string
	include  []string
}

// pullCmd downloads a model repository from the Hugging Face Hub.
var pullCmd = &cobra.Command{
	Use:   "pull ORG/NAME",
	Short: "Download a model from the Hugging Face Hub",
	Long: `Download a model repository from the Hugging Face Hub.

By default the weights (*.safetensors, *.gguf) and the configuration,
tokenizer, generation and chat-template files (*.json, *.jinja, *.txt,
*.model, *.tiktoken) are downloaded; --include patterns replace that
selection. A pattern without '/' matches file names in any directory, one
with '/' matches the whole path, and one ending in '/' selects a directory.

Interrupted downloads are resumed and complete files are skipped, so running
the command again finishes a pull. The final directory is printed on stdout.

Environment:
  HF_TOKEN     access token for private or gated models
               (HUGGING_FACE_HUB_TOKEN is also read)
  HF_ENDPOINT  Hub URL (default https://huggingface.co)
  RINGO_HOME   base of the default directory (default ~/.cache/ringo)`,
	Example: `  ringo pull inclusionAI/Ring-mini-linear-2.0
  ringo pull inclusionAI/Ling-mini-2.0 --dir ./ling --include '*.json' --include '*.safetensors'`,
	Args: cobra.ExactArgs(1),
	RunE: runPull,
}

func init() {
	f := pullCmd.Flags()
	f.StringVar(&pullFlags.revision, "revision", hub.DefaultRevision, "branch, tag or commit to download")
	f.StringVar(&pullFlags.dir, "dir", "", "destination directory (default $RINGO_HOME/models/ORG/NAME, or ~/.cache/ringo/models/ORG/NAME)")
	f.StringArrayVar(&pullFlags.include, "include", nil, "glob of files to download; repeatable; replaces the default selection")
	rootCmd.AddCommand(pullCmd)
}

// runPull implements "ringo pull".
func runPull(cmd *cobra.Command, args []string) error {
	repo := args[0]
	if err := hub.ValidateRepo(repo); err != nil {
		return err
	}
	dir := pullFlags.dir
	if dir == "" {
		dir = hub.DefaultDir(repo)
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c := hub.NewClient()
	c.Progress = cmd.ErrOrStderr()
	if err := c.Pull(ctx, repo, pullFlags.revision, dir, pullFlags.include); err != nil {
		return fmt.Errorf("pull %s: %w", repo, err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), dir)
	return nil
}
