package server

import (
	"container/list"
	"slices"

	"github.com/ringo-ai/ringo/model"
)

// prefixCache keeps model state snapshots keyed by the token sequence they
// have consumed, with the logits that followed, in LRU order under a byte
// budget. It is owned by the scheduler goroutine (not safe for concurrent
// use). A snapshot can only be continued, never rewound, so it is usable
// for a prompt only when its whole token sequence is a prefix of it.
type prefixCache struct {
	limit   int64
	bytes   int64
	byHash  map[uint64][]*cacheEntry
	lengths map[int]int // token count → number of entries of that length
	lru     *list.List  // of *cacheEntry, most recent first
	m       *metrics
	free    func(model.State)
}

// cacheEntry is one snapshot.
type cacheEntry struct {
	tokens []int32
	hash   uint64
	state  model.State
	logits []float32 // next-token logits after tokens
	bytes  int64
	elem   *list.Element
}

func newPrefixCache(limit int64, m *metrics, free func(model.State)) *prefixCache {
	return &prefixCache{limit: limit, byHash: map[uint64][]*cacheEntry{}, lengths: map[int]int{}, lru: list.New(), m: m, free: free}
}

// hashStep extends a prefix hash by one token.
func hashStep(h uint64, tok int32) uint64 {
	h ^= uint64(uint32(tok)) + 0x9e3779b97f4a7c15
	h *= 0x100000001b3
	h ^= h >> 29
	return h
}

// prefixHashes returns h where h[i] is the hash of tokens[:i].
func prefixHashes(tokens []int32) []uint64 {
	h := make([]uint64, len(tokens)+1)
	h[0] = 0xcbf29ce484222325
	for i, t := range tokens {
		h[i+1] = hashStep(h[i], t)
	}
	return h
}

// enabled reports whether the cache may hold anything.
func (c *prefixCache) enabled() bool { return c != nil && c.limit > 0 }

// lookup returns the entry with the longest token sequence that is a
// prefix of prompt (nil if none), marking it recently used. An entry
// without logits (its last token drawn by the model) only serves prompts
// longer than it.
func (c *prefixCache) lookup(prompt []int32) *cacheEntry {
	if !c.enabled() || len(c.lengths) == 0 {
		return nil
	}
	lens := make([]int, 0, len(c.lengths))
	for l := range c.lengths {
		if l <= len(prompt) {
			lens = append(lens, l)
		}
	}
	if len(lens) == 0 {
		return nil
	}
	slices.Sort(lens)
	hs := prefixHashes(prompt)
	for i := len(lens) - 1; i >= 0; i-- {
		l := lens[i]
		for _, e := range c.byHash[hs[l]] {
			if len(e.tokens) == l && slices.Equal(e.tokens, prompt[:l]) && (e.logits != nil || l < len(prompt)) {
				c.lru.MoveToFront(e.elem)
				return e
			}
		}
	}
	return nil
}

// has reports whether tokens are cached exactly.
func (c *prefixCache) has(tokens []int32) bool {
	if !c.enabled() {
		return false
	}
	hs := prefixHashes(tokens)
	for _, e := range c.byHash[hs[len(tokens)]] {
		if slices.Equal(e.tokens, tokens) {
			return true
		}
	}
	return false
}

// insert adds a snapshot, taking ownership of st (freed if it is not
// kept). tokens and logits are copied.
func (c *prefixCache) insert(tokens []int32, st model.State, logits []float32) {
	if !c.enabled() || len(tokens) == 0 || c.has(tokens) {
		c.free(st)
		return
	}
	e := &cacheEntry{
		tokens: slices.Clone(tokens),
		state:  st,
		logits: slices.Clone(logits),
	}
	e.bytes = st.Bytes() + int64(4*len(e.logits)) + int64(4*len(e.tokens))
	if e.bytes > c.limit {
		c.free(st)
		return
	}
	hs := prefixHashes(tokens)
	e.hash = hs[len(tokens)]
	for c.bytes+e.bytes > c.limit && c.lru.Len() > 0 {
		c.remove(c.lru.Back().Value.(*cacheEntry))
		c.m.cacheEvictions.Add(1)
	}
	e.elem = c.lru.PushFront(e)
	c.byHash[e.hash] = append(c.byHash[e.hash], e)
	c.lengths[len(e.tokens)]++
	c.bytes += e.bytes
	c.m.cacheEntries.Add(1)
	c.m.cacheBytes.Add(e.bytes)
}

// remove drops an entry and frees its state.
func (c *prefixCache) remove(e *cacheEntry) {
	c.lru.Remove(e.elem)
	list := c.byHash[e.hash]
	for i, x := range list {
		if x == e {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(c.byHash, e.hash)
	} else {
		c.byHash[e.hash] = list
	}
	if c.lengths[len(e.tokens)]--; c.lengths[len(e.tokens)] == 0 {
		delete(c.lengths, len(e.tokens))
	}
	c.bytes -= e.bytes
	c.m.cacheEntries.Add(-1)
	c.m.cacheBytes.Add(-e.bytes)
	c.free(e.state)
	e.state = nil
}

// clear drops every entry.
func (c *prefixCache) clear() {
	if c == nil {
		return
	}
	for c.lru.Len() > 0 {
		c.remove(c.lru.Back().Value.(*cacheEntry))
	}
}

// len returns the number of entries.
func (c *prefixCache) len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}
