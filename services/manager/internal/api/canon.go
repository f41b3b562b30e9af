package api

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/jobsys/jobs/pkg/job"
)

// The original system stored JSON.stringify(JSON.parse(body)), so a job's
// stored payload, and the hash of it, do not depend on how the client
// spelled its JSON: Python's "Jos\u00e9" and 1.0 are stored as "José"
// and 1. canonical computes the same bytes as V8 does, in one pass.

// errCanonSyntax: the body is not JSON (or not UTF-8, or too deep); the
// caller finds out which and where with the slower checks.
var errCanonSyntax = errors.New("not canonicalisable JSON")

// errCanonTooBig: the result passed the size limit while being built.
var errCanonTooBig = errors.New("canonical JSON over the size limit")

// member is one "key":value of an object being written: its bytes are
// out[start:end], the key's out[start:keyEnd].
type member struct {
	start, keyEnd, end int
	index              uint32 // the key as an array index, when isIndex
	isIndex            bool
}

type canon struct {
	in  []byte
	pos int
	out []byte
	max int
	// members is a stack shared by the objects being written, so that an
	// object costs no allocation of its own.
	members []member
	scratch []byte
}

// canonical returns what JSON.stringify(JSON.parse(body)) returns in V8
// for a body that is one JSON value in UTF-8 nested at most MaxDepth
// deep, or errCanonSyntax, or errCanonTooBig once the result passes max
// bytes (with the result when it was complete, else nil). Numbers can grow when rewritten (1e20 is 100000000000000000000),
// so the limit is checked while writing, not only at the end.
func canonical(body []byte, max int) ([]byte, error) {
	c := canon{in: body, max: max, out: make([]byte, 0, min(len(body), max)+16)}
	c.ws()
	if err := c.value(0); err != nil {
		return nil, err
	}
	c.ws()
	if c.pos != len(c.in) {
		return nil, errCanonSyntax
	}
	if len(c.out) > max {
		return c.out, errCanonTooBig // complete: the caller can say its size
	}
	return c.out, nil
}

func (c *canon) ws() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canon) value(depth int) error {
	if c.pos >= len(c.in) {
		return errCanonSyntax
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(depth + 1)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		return c.string()
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.number()
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	}
	return errCanonSyntax
}

func (c *canon) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return errCanonSyntax
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canon) array(depth int) error {
	if depth > MaxDepth {
		return errCanonSyntax
	}
	c.pos++ // [
	c.out = append(c.out, '[')
	c.ws()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for {
		c.ws()
		if err := c.value(depth); err != nil {
			return err
		}
		if len(c.out) > c.max {
			return errCanonTooBig
		}
		if more, err := c.next(']'); err != nil || !more {
			c.out = append(c.out, ']')
			return err
		}
	}
}

// next reads what follows a value in an array or object: a comma, which
// it writes, or the closing bracket, which the caller writes.
func (c *canon) next(closing byte) (more bool, err error) {
	c.ws()
	switch {
	case c.pos >= len(c.in):
		return false, errCanonSyntax
	case c.in[c.pos] == ',':
		c.pos++
		c.out = append(c.out, ',')
		return true, nil
	case c.in[c.pos] == closing:
		c.pos++
		return false, nil
	}
	return false, errCanonSyntax
}

// object writes the members as they come and puts them in V8's order
// afterwards only when it differs: array-index keys first, ascending,
// then the other keys in the order they first appeared, each with the
// last value given for it.
func (c *canon) object(depth int) error {
	if depth > MaxDepth {
		return errCanonSyntax
	}
	c.pos++ // {
	open := len(c.out)
	c.out = append(c.out, '{')
	c.ws()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	base := len(c.members)
	defer func() { c.members = c.members[:base] }()
	reorder := false
	var seen map[string]int // past a few members, duplicates are found by map
	for {
		c.ws()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return errCanonSyntax
		}
		m := member{start: len(c.out)}
		if err := c.string(); err != nil {
			return err
		}
		m.keyEnd = len(c.out)
		m.index, m.isIndex = arrayIndex(c.out[m.start+1 : m.keyEnd-1])
		c.ws()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return errCanonSyntax
		}
		c.pos++
		c.out = append(c.out, ':')
		c.ws()
		if err := c.value(depth); err != nil {
			return err
		}
		m.end = len(c.out)
		if len(c.out) > c.max {
			return errCanonTooBig
		}

		prev := c.members[base:]
		if m.isIndex && len(prev) > 0 {
			last := prev[len(prev)-1]
			if !last.isIndex || last.index >= m.index {
				reorder = true // out of order, or a duplicate index
			}
		}
		if !reorder {
			key := c.out[m.start:m.keyEnd]
			if seen == nil && len(prev) < 16 {
				for _, p := range prev {
					if bytes.Equal(c.out[p.start:p.keyEnd], key) {
						reorder = true
						break
					}
				}
			} else {
				if seen == nil {
					seen = make(map[string]int, 2*len(prev))
					for i, p := range prev {
						seen[string(c.out[p.start:p.keyEnd])] = i
					}
				}
				if _, dup := seen[string(key)]; dup {
					reorder = true
				} else {
					seen[string(key)] = len(prev)
				}
			}
		}
		c.members = append(c.members, m)
		more, err := c.next('}')
		if err != nil {
			return err
		}
		if !more {
			if reorder {
				c.reorder(open, c.members[base:])
			}
			c.out = append(c.out, '}')
			return nil
		}
	}
}

// reorder rewrites the members written after out[open] in V8's order.
func (c *canon) reorder(open int, ms []member) {
	key := func(m member) []byte { return c.out[m.start:m.keyEnd] }
	// The last occurrence of a key gives the value; the first, the place.
	last := make(map[string]int, len(ms))
	for i, m := range ms {
		last[string(key(m))] = i
	}
	order := make([]int, 0, len(last))
	for _, m := range ms {
		if j := last[string(key(m))]; j >= 0 {
			order = append(order, j)
			last[string(key(m))] = -1 // placed
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ma, mb := ms[a], ms[b]
		switch {
		case ma.isIndex && mb.isIndex:
			return cmp.Compare(ma.index, mb.index)
		case ma.isIndex:
			return -1
		case mb.isIndex:
			return 1
		}
		return 0
	})
	c.scratch = append(c.scratch[:0], c.out[open+1:]...)
	shift := open + 1
	c.out = c.out[:open+1]
	for n, i := range order {
		if n > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[ms[i].start-shift:ms[i].end-shift]...)
	}
}

// arrayIndex reports whether the (canonical) key text k is an array index
// in ECMAScript's sense: the canonical decimal form of an integer from 0
// to 2^32-2. V8 keeps such keys apart and lists them first.
func arrayIndex(k []byte) (uint32, bool) {
	if len(k) == 0 || len(k) > 10 || (k[0] == '0' && len(k) > 1) {
		return 0, false
	}
	var n uint64
	for _, d := range k {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + uint64(d-'0')
	}
	if n > math.MaxUint32-1 {
		return 0, false
	}
	return uint32(n), true
}

// string writes the JSON string at c.pos as JSON.stringify writes the
// string JSON.parse makes of it: \" \\ \b \f \n \r \t, other control
// characters as \u00xx, lone surrogates as \udxxx, everything else (/,
// U+2028, U+2029, DEL) as itself in UTF-8.
func (c *canon) string() error {
	c.pos++ // "
	c.out = append(c.out, '"')
	in := c.in
	for {
		// Copy the run of bytes that stay as they are.
		start := c.pos
		for c.pos < len(in) {
			b := in[c.pos]
			if b < utf8.RuneSelf {
				if b < 0x20 || b == '"' || b == '\\' {
					break
				}
				c.pos++
				continue
			}
			r, n := utf8.DecodeRune(in[c.pos:])
			if r == utf8.RuneError && n == 1 {
				return errCanonSyntax
			}
			c.pos += n
		}
		c.out = append(c.out, in[start:c.pos]...)
		if c.pos >= len(in) || in[c.pos] < 0x20 {
			return errCanonSyntax
		}
		if in[c.pos] == '"' {
			c.pos++
			c.out = append(c.out, '"')
			return nil
		}
		// A backslash.
		if c.pos+1 >= len(in) {
			return errCanonSyntax
		}
		esc := in[c.pos+1]
		c.pos += 2
		switch esc {
		case '"', '\\', 'b', 'f', 'n', 'r', 't':
			c.out = append(c.out, '\\', esc)
		case '/':
			c.out = append(c.out, '/')
		case 'u':
			u, ok := hex4(in, c.pos)
			if !ok {
				return errCanonSyntax
			}
			c.pos += 4
			if u >= 0xd800 && u < 0xdc00 && c.pos+6 <= len(in) && in[c.pos] == '\\' && in[c.pos+1] == 'u' {
				if lo, ok := hex4(in, c.pos+2); ok && lo >= 0xdc00 && lo < 0xe000 {
					c.pos += 6
					c.out = utf8.AppendRune(c.out, 0x10000+(rune(u)-0xd800)<<10+(rune(lo)-0xdc00))
					continue
				}
			}
			// Lone surrogates stay escaped, as JSON.stringify writes them.
			c.out = job.AppendStringified(c.out, rune(u))
		default:
			return errCanonSyntax
		}
	}
}

func hex4(b []byte, i int) (uint16, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var v uint16
	for _, h := range b[i : i+4] {
		switch {
		case h >= '0' && h <= '9':
			h -= '0'
		case h >= 'a' && h <= 'f':
			h -= 'a' - 10
		case h >= 'A' && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(h)
	}
	return v, true
}

// number writes the JSON number at c.pos as ECMAScript's Number::toString
// writes the double JSON.parse makes of it; an infinity (1e400) is null,
// as JSON.stringify writes it.
func (c *canon) number() error {
	in, start := c.in, c.pos
	i := start
	if in[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
			n++
		}
		return n
	}
	intStart := i
	switch n := digits(); {
	case n == 0:
		return errCanonSyntax
	case n > 1 && in[intStart] == '0':
		return errCanonSyntax
	}
	intEnd := i
	plain := i-intStart <= 15 // an integer this short is exact as a double
	if i < len(in) && in[i] == '.' {
		i++
		if digits() == 0 {
			return errCanonSyntax
		}
		plain = plainDecimal(in[intStart:intEnd], in[intEnd+1:i])
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		plain = false
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if digits() == 0 {
			return errCanonSyntax
		}
	}
	c.pos = i
	lit := in[start:i]
	if plain {
		if len(lit) == 2 && lit[0] == '-' && lit[1] == '0' {
			lit = lit[1:] // -0 is 0
		}
		c.out = append(c.out, lit...)
		return nil
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil && !math.IsInf(f, 0) {
		return errCanonSyntax
	}
	c.out = appendES(c.out, f)
	return nil
}

// plainDecimal reports whether JavaScript writes the number intPart.frac
// as it is spelled, so that it needs no conversion. It does when there
// are at most 15 significant digits (then the double's shortest digits
// are those digits), no trailing zero, and the point is where
// Number::toString puts it (at most five zeros after "0.").
func plainDecimal(intPart, frac []byte) bool {
	if frac[len(frac)-1] == '0' {
		return false
	}
	sig := len(intPart) + len(frac)
	if intPart[0] == '0' {
		zeros := 0
		for zeros < len(frac) && frac[zeros] == '0' {
			zeros++
		}
		if zeros > 5 {
			return false
		}
		sig = len(frac) - zeros
	}
	return sig <= 15
}

// appendES writes f as ECMAScript's Number::toString(f) does (ECMA-262
// 6.1.6.1.20), with JSON.stringify's null for the infinities. strconv's
// shortest digits are the digits the algorithm asks for: the fewest that
// read back as f, the closest to f when several are that few.
func appendES(out []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 0) || math.IsNaN(f):
		return append(out, "null"...)
	case f == 0:
		return append(out, '0')
	case f < 0:
		out = append(out, '-')
		f = -f
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // d.ddde±xx
	mark := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[mark+1:]))
	var ds [20]byte
	s := append(ds[:0], e[0])
	if mark > 1 {
		s = append(s, e[2:mark]...)
	}
	k, n := len(s), exp+1
	switch {
	case k <= n && n <= 21:
		out = append(out, s...)
		for range n - k {
			out = append(out, '0')
		}
	case 0 < n && n <= 21:
		out = append(out, s[:n]...)
		out = append(out, '.')
		out = append(out, s[n:]...)
	case -6 < n && n <= 0:
		out = append(out, '0', '.')
		for range -n {
			out = append(out, '0')
		}
		out = append(out, s...)
	default:
		out = append(out, s[0])
		if k > 1 {
			out = append(out, '.')
			out = append(out, s[1:]...)
		}
		out = append(out, 'e')
		if n-1 >= 0 {
			out = append(out, '+')
		}
		out = strconv.AppendInt(out, int64(n-1), 10)
	}
	return out
}
