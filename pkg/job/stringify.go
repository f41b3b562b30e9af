package job

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// The characters JSON.stringify escapes with a backslash and a letter,
// and those letters.
const (
	shortEscaped = "\"\\\b\f\n\r\t"
	shortEscapes = "\"\\bfnrt"
)

// AppendStringified appends r as JavaScript's JSON.stringify writes it
// inside a string: the quote, the backslash and \b \f \n \r \t with a
// backslash, other control characters and lone surrogates (U+D800 to
// U+DFFF, which a JavaScript string can hold) as lower-case \uxxxx, and
// everything else, <, >, &, U+2028 and U+2029 included, as itself in
// UTF-8. It is the one place that knows those rules: JSONStringify and
// the manager's normalisation of job bodies both use it.
func AppendStringified(dst []byte, r rune) []byte {
	switch {
	case r < 0x20 || r == '"' || r == '\\':
		for i := range len(shortEscaped) {
			if rune(shortEscaped[i]) == r {
				return append(dst, '\\', shortEscapes[i])
			}
		}
		return appendU(dst, r)
	case r >= 0xd800 && r < 0xe000:
		return appendU(dst, r)
	case r < utf8.RuneSelf:
		return append(dst, byte(r))
	}
	return utf8.AppendRune(dst, r)
}

func appendU(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

// JSONStringify returns what JavaScript's JSON.stringify returns for the
// string s (see AppendStringified). It differs from encoding/json: it
// escapes only the quote, the backslash and control characters, and
// leaves <, >, &, U+2028 and U+2029 as they are. Bytes that are not valid
// UTF-8 become U+FFFD, as they do when a JavaScript runtime decodes a
// request body.
func JSONStringify(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				b = append(b, c) // the common case, kept short
			} else {
				b = AppendStringified(b, rune(c))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:]) // U+FFFD for a bad byte
		b = AppendStringified(b, r)
		i += size
	}
	return string(append(b, '"'))
}
