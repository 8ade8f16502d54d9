// Command loadgen drives a running `ringo serve` (or any OpenAI-compatible
// server) with C concurrent streaming chat requests for a while and reports
// aggregate generated tokens/s, time to first token and inter-token latency.
//
//	go run ./scripts/loadgen -url http://127.0.0.1:8080 -c 1,4,16 -d 30s -max-tokens 64
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "server base URL")
	conc := flag.String("c", "1,4,16", "concurrent streams, a list")
	dur := flag.Duration("d", 30*time.Second, "duration of each level")
	maxTokens := flag.Int("max-tokens", 64, "max_tokens per request")
	prompt := flag.String("prompt", "Write a long story about a lighthouse keeper.", "user message")
	flag.Parse()
	fmt.Printf("%-8s %10s %10s %12s %12s %8s\n", "streams", "requests", "tok/s", "ttft p50 ms", "itl p50 ms", "errors")
	for _, f := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c <= 0 {
			fmt.Fprintln(os.Stderr, "bad -c", f)
			os.Exit(2)
		}
		run(*url, c, *dur, *maxTokens, *prompt)
	}
}

func run(url string, c int, dur time.Duration, maxTokens int, prompt string) {
	var mu sync.Mutex
	var tokens, requests, errors int
	var ttft, itl []float64
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				body, _ := json.Marshal(map[string]any{
					"messages":   []map[string]string{{"role": "user", "content": fmt.Sprintf("%s (%d/%d)", prompt, i, n)}},
					"max_tokens": maxTokens, "stream": true, "temperature": 0.7, "seed": i*1000 + n,
					"stream_options": map[string]bool{"include_usage": true},
				})
				t0 := time.Now()
				resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
				if err != nil || resp.StatusCode != 200 {
					mu.Lock()
					errors++
					mu.Unlock()
					if resp != nil {
						resp.Body.Close()
					}
					continue
				}
				sc := bufio.NewScanner(resp.Body)
				var last time.Time
				var got, usage int
				var myITL []float64
				first := 0.0
				for sc.Scan() {
					line := sc.Text()
					if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
						continue
					}
					var chunk struct {
						Usage *struct {
							CompletionTokens int `json:"completion_tokens"`
						} `json:"usage"`
					}
					if json.Unmarshal([]byte(line[6:]), &chunk) == nil && chunk.Usage != nil {
						usage = chunk.Usage.CompletionTokens
						continue
					}
					if !strings.Contains(line, `"delta":{"content"`) && !strings.Contains(line, `"reasoning_content"`) {
						continue
					}
					now := time.Now()
					if got == 0 {
						first = now.Sub(t0).Seconds() * 1000
					} else {
						myITL = append(myITL, now.Sub(last).Seconds()*1000)
					}
					last = now
					got++
				}
				resp.Body.Close()
				mu.Lock()
				requests++
				tokens += usage // generated tokens as the server counts them
				if got > 0 {
					ttft = append(ttft, first)
				}
				itl = append(itl, myITL...)
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("%-8d %10d %10.1f %12.0f %12.1f %8d\n", c, requests, float64(tokens)/el, median(ttft), median(itl), errors)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}
