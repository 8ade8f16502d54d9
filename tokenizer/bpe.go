package tokenizer

import (
	"container/heap"
	"sync"
	"unicode/utf8"
)

// bytesToUnicode returns the GPT-2 byte-level alphabet: printable bytes map
// to themselves, the others to code points starting at U+0100.
func bytesToUnicode() (b2r [256]rune) {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
	}
	return
}

// mergeInfo is the rank of a merge and the id of the merged token.
type mergeInfo struct {
	rank int32
	id   int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe is the BPE model: vocabulary, merges and a per-word cache.
type bpe struct {
	vocab        map[string]int32
	merges       map[uint64]mergeInfo
	unk          int32 // -1 when none
	ignoreMerges bool
	byteLevel    bool
	byteID       [256]int32 // id of each byte's byte-level char, -1 if absent
	b2r          [256]rune

	mu    sync.RWMutex
	cache map[string][]int32
}

const maxCacheEntries = 200000

// symbol is one node of the doubly-linked list of a word being merged.
type symbol struct {
	id         int32
	prev, next int32
	len        int32 // 0 once merged into its left neighbour
}

type mergeCand struct {
	pos  int32
	rank int32
	id   int32
}

type mergeHeap []mergeCand

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeCand)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mapped returns the model-side string of a word: byte-level chars for a
// byte-level model, the word itself otherwise.
func (m *bpe) mapped(word string) string {
	if !m.byteLevel {
		return word
	}
	buf := make([]byte, 0, len(word)*2)
	for i := 0; i < len(word); i++ {
		buf = utf8.AppendRune(buf, m.b2r[word[i]])
	}
	return string(buf)
}

// encodeWord appends the token ids of one pre-tokenized word to dst.
func (m *bpe) encodeWord(word string, dst []int32) []int32 {
	if word == "" {
		return dst
	}
	m.mu.RLock()
	ids, ok := m.cache[word]
	m.mu.RUnlock()
	if ok {
		return append(dst, ids...)
	}
	ids = m.mergeWord(word)
	m.mu.Lock()
	if len(m.cache) >= maxCacheEntries {
		m.cache = make(map[string][]int32)
	}
	m.cache[word] = ids
	m.mu.Unlock()
	return append(dst, ids...)
}

// mergeWord runs the BPE merges on one word, lowest rank first and, among
// equal ranks, leftmost first (as Hugging Face tokenizers does).
func (m *bpe) mergeWord(word string) []int32 {
	if m.ignoreMerges {
		if id, ok := m.vocab[m.mapped(word)]; ok {
			return []int32{id}
		}
	}
	syms := make([]symbol, 0, len(word))
	if m.byteLevel {
		for i := 0; i < len(word); i++ {
			id := m.byteID[word[i]]
			if id < 0 {
				if m.unk < 0 {
					continue
				}
				id = m.unk
			}
			syms = append(syms, symbol{id: id, len: 1})
		}
	} else {
		for _, r := range word {
			id, ok := m.vocab[string(r)]
			if !ok {
				if m.unk < 0 {
					continue
				}
				id = m.unk
			}
			syms = append(syms, symbol{id: id, len: 1})
		}
	}
	n := len(syms)
	for i := range syms {
		syms[i].prev = int32(i - 1)
		syms[i].next = int32(i + 1)
	}
	if n > 0 {
		syms[n-1].next = -1
	}
	h := make(mergeHeap, 0, n)
	for i := 0; i+1 < n; i++ {
		if mi, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h = append(h, mergeCand{pos: int32(i), rank: mi.rank, id: mi.id})
		}
	}
	heap.Init(&h)
	for h.Len() > 0 {
		c := heap.Pop(&h).(mergeCand)
		s := &syms[c.pos]
		if s.len == 0 || s.next < 0 {
			continue
		}
		nx := &syms[s.next]
		// Stale candidate: the pair changed since it was pushed.
		if mi, ok := m.merges[pairKey(s.id, nx.id)]; !ok || mi.id != c.id || mi.rank != c.rank {
			continue
		}
		s.id = c.id
		s.len += nx.len
		nx.len = 0
		s.next = nx.next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
		}
		if s.prev >= 0 {
			p := &syms[s.prev]
			if mi, ok := m.merges[pairKey(p.id, s.id)]; ok {
				heap.Push(&h, mergeCand{pos: s.prev, rank: mi.rank, id: mi.id})
			}
		}
		if s.next >= 0 {
			if mi, ok := m.merges[pairKey(s.id, syms[s.next].id)]; ok {
				heap.Push(&h, mergeCand{pos: c.pos, rank: mi.rank, id: mi.id})
			}
		}
	}
	out := make([]int32, 0, n)
	for i := 0; i >= 0 && i < n; i = int(syms[i].next) {
		out = append(out, syms[i].id)
	}
	return out
}
