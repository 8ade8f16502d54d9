// Command ringo runs Ring-linear 2.0 and Ling 2.0 language models.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	_ "github.com/ringo-ai/ringo/backend/cuda" // --device cuda (found at run time; no cgo)
)

var rootCmd = &cobra.Command{
	Use:           "ringo",
	Short:         "Run Ring-linear 2.0 and Ling 2.0 models",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ringo:", err)
		os.Exit(1)
	}
}
