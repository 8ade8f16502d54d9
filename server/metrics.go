package server

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
)

// histogram is a Prometheus histogram with fixed buckets.
type histogram struct {
	mu      sync.Mutex
	bounds  []float64
	counts  []uint64 // per bucket (not cumulative); last is +Inf
	sum     float64
	samples uint64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

// observe records one value.
func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound ≥ v
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.samples++
	h.mu.Unlock()
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, strconv.FormatFloat(b, 'g', -1, 64), cum)
	}
	cum += h.counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, cum, name, fmtFloat(h.sum), name, h.samples)
}

func fmtFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// metrics holds the server's counters and gauges.
type metrics struct {
	mu       sync.Mutex
	requests map[[2]string]uint64 // endpoint, status code → count

	promptTokens    atomic.Int64
	generatedTokens atomic.Int64
	cancelled       atomic.Int64
	failed          atomic.Int64

	queueDepth atomic.Int64
	running    atomic.Int64
	steps      atomic.Int64
	stepRows   atomic.Int64

	cacheHits      atomic.Int64
	cacheMisses    atomic.Int64
	cacheEvictions atomic.Int64
	cachedTokens   atomic.Int64 // prompt tokens served from the cache
	cacheEntries   atomic.Int64
	cacheBytes     atomic.Int64

	statesLive atomic.Int64 // model states allocated and not yet freed

	ttft *histogram
	itl  *histogram
	e2e  *histogram
}

func newMetrics() *metrics {
	return &metrics{
		requests: map[[2]string]uint64{},
		ttft:     newHistogram(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
		itl:      newHistogram(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
		e2e:      newHistogram(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
	}
}

// request counts a finished HTTP request.
func (m *metrics) request(endpoint string, status int) {
	m.mu.Lock()
	m.requests[[2]string{endpoint, strconv.Itoa(status)}]++
	m.mu.Unlock()
}

// write renders all metrics in the Prometheus text exposition format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	fmt.Fprintf(w, "# HELP ringo_requests_total HTTP requests by endpoint and status code.\n# TYPE ringo_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(w, "ringo_requests_total{endpoint=%q,status=%q} %d\n", k[0], k[1], m.requests[k])
	}
	m.mu.Unlock()
	counter := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("ringo_prompt_tokens_total", "Prompt tokens of admitted requests.", m.promptTokens.Load())
	counter("ringo_generated_tokens_total", "Tokens generated.", m.generatedTokens.Load())
	counter("ringo_sequences_cancelled_total", "Sequences cancelled (client gone, stop string, shutdown).", m.cancelled.Load())
	counter("ringo_sequences_failed_total", "Sequences that ended with an internal error.", m.failed.Load())
	counter("ringo_forward_steps_total", "Batched forward passes run by the scheduler.", m.steps.Load())
	counter("ringo_forward_rows_total", "Token rows processed by forward passes.", m.stepRows.Load())
	gauge("ringo_queue_depth", "Requests waiting to join the running batch.", m.queueDepth.Load())
	gauge("ringo_running_sequences", "Sequences in the running batch.", m.running.Load())
	counter("ringo_prefix_cache_hits_total", "Admissions that reused a cached state.", m.cacheHits.Load())
	counter("ringo_prefix_cache_misses_total", "Admissions that found no cached prefix.", m.cacheMisses.Load())
	counter("ringo_prefix_cache_evictions_total", "Cached states evicted to respect the memory bound.", m.cacheEvictions.Load())
	counter("ringo_prefix_cache_cached_tokens_total", "Prompt tokens served from cached states instead of prefill.", m.cachedTokens.Load())
	gauge("ringo_prefix_cache_entries", "States held by the prefix cache.", m.cacheEntries.Load())
	gauge("ringo_prefix_cache_bytes", "Bytes held by the prefix cache.", m.cacheBytes.Load())
	gauge("ringo_model_states", "Model states allocated (running sequences and cache entries).", m.statesLive.Load())
	m.ttft.write(w, "ringo_time_to_first_token_seconds", "Time from request admission to the queue until its first token.")
	m.itl.write(w, "ringo_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.")
	m.e2e.write(w, "ringo_request_duration_seconds", "Time from queueing until a sequence ends.")
}
