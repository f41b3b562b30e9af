package job

import (
	"strings"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// JSONStringify returns what JavaScript's JSON.stringify returns for the
// string s. It differs from encoding/json: it escapes only the quote, the
// backslash and control characters (with \b \f \n \r \t where they exist
// and lower-case \u00xx otherwise), and leaves <, >, &, U+2028 and U+2029
// as they are. Bytes that are not valid UTF-8 become U+FFFD, as they do
// when a JavaScript runtime decodes a request body.
func JSONStringify(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				b.WriteString(`\"`)
			case c == '\\':
				b.WriteString(`\\`)
			case c == '\b':
				b.WriteString(`\b`)
			case c == '\f':
				b.WriteString(`\f`)
			case c == '\n':
				b.WriteString(`\n`)
			case c == '\r':
				b.WriteString(`\r`)
			case c == '\t':
				b.WriteString(`\t`)
			case c < 0x20:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}
