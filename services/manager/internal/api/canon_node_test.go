package api_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/manager/internal/api"
)

// nodeScript answers each line of base64 JSON text with what the original
// system made of it: "ok <base64 of JSON.stringify(JSON.parse(text))>
// <md5 hex of JSON.stringify(that string)>", or "err" when JSON.parse
// throws.
const nodeScript = `
const crypto = require('crypto');
const rl = require('readline').createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on('line', (line) => {
  let ans = 'err';
  try {
    const s = JSON.stringify(JSON.parse(Buffer.from(line, 'base64').toString('utf8')));
    const h = crypto.createHash('md5').update(JSON.stringify(s)).digest('hex');
    ans = 'ok ' + Buffer.from(s, 'utf8').toString('base64') + ' ' + h;
  } catch (e) {}
  out.push(ans);
  if (out.length >= 256) { process.stdout.write(out.join('\n') + '\n'); out.length = 0; }
});
rl.on('close', () => { if (out.length) process.stdout.write(out.join('\n') + '\n'); });
`

// nodeAnswer is what Node made of one body.
type nodeAnswer struct {
	ok   bool
	out  []byte
	hash string
}

// runNode sends every body through one Node process and returns its
// answers in order. It fails, never skips, without Node: the payload
// contract is Node's.
func runNode(t *testing.T, bodies [][]byte) []nodeAnswer {
	t.Helper()
	bin, err := exec.LookPath("node")
	if err != nil {
		bin, err = exec.LookPath("nodejs")
	}
	if err != nil {
		t.Fatal("install Node.js: apt-get install -y nodejs")
	}
	cmd := exec.CommandContext(t.Context(), bin, "-e", nodeScript)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	go func() {
		w := bufio.NewWriter(stdin)
		for _, b := range bodies {
			_, _ = w.WriteString(base64.StdEncoding.EncodeToString(b))
			_ = w.WriteByte('\n')
		}
		_ = w.Flush()
		_ = stdin.Close()
	}()
	answers := make([]nodeAnswer, 0, len(bodies))
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "ok" {
			out, err := base64.StdEncoding.DecodeString(f[1])
			require.NoError(t, err)
			answers = append(answers, nodeAnswer{ok: true, out: out, hash: f[2]})
			continue
		}
		require.Equal(t, []string{"err"}, f, "node answered %q", sc.Text())
		answers = append(answers, nodeAnswer{})
	}
	require.NoError(t, sc.Err())
	require.NoError(t, cmd.Wait(), "node: %s", stderr.String())
	require.Len(t, answers, len(bodies), "node: %s", stderr.String())
	return answers
}

// TestNormalizeJSONMatchesNode is the payload contract: for every valid
// body the stored payload is what the original system stored,
// JSON.stringify(JSON.parse(body)) byte for byte, and its hash is the
// same. Thousands of generated bodies plus the fuzz corpus go through the
// normaliser and through Node.
func TestNormalizeJSONMatchesNode(t *testing.T) {
	t.Parallel()
	bodies := fixedBodies()
	bodies = append(bodies, fuzzCorpus(t)...)
	rng := rand.New(rand.NewPCG(1, uint64(len(bodies))))
	for range 4000 {
		var g gen
		g.rng = rng
		g.value(0)
		bodies = append(bodies, g.b.Bytes())
	}
	answers := runNode(t, bodies)
	const max = 1 << 20
	agreed, compactDiffers := 0, 0
	for i, body := range bodies {
		want := answers[i]
		got, err := api.NormalizeJSON(body, max)
		if !want.ok {
			require.Error(t, err, "node refuses %q; we accept it as %q", body, got)
			continue
		}
		if !utf8.Valid(body) {
			// Node decodes bad UTF-8 as U+FFFD and goes on; we refuse
			// it with a 400 that says where it is.
			require.ErrorContains(t, err, "not valid UTF-8", "%q", body)
			continue
		}
		require.NoError(t, err, "node accepts %q", body)
		var compact bytes.Buffer
		if json.Compact(&compact, body) != nil || !bytes.Equal(compact.Bytes(), want.out) {
			compactDiffers++ // what only removing whitespace got wrong
		}
		require.Equal(t, string(want.out), string(got), "body %q", body)
		require.Equal(t, want.hash, job.Hash(string(got)), "hash of %q", got)
		agreed++
	}
	t.Logf("%d bodies, %d valid ones stored and hashed as Node does; removing whitespace alone gets %d of them wrong",
		len(bodies), agreed, compactDiffers)
	require.Greater(t, agreed, 4000)
	require.Greater(t, compactDiffers, agreed/2, "the generator spells most bodies unlike JSON.stringify")
}

// fixedBodies are the cases named in the contract.
func fixedBodies() [][]byte {
	var bs [][]byte
	for _, s := range []string{
		`{"example":"data"}`, `{"name":"Jos\u00e9","n":1.0}`, `{"b":1,"a":2,"b":3}`,
		`{"a":1,"b":2,"a":3,"1":0,"b":5}`, `{"__proto__":1,"a":2}`, `{"__proto__":{"x":1},"__proto__":[]}`,
		`{"x":1,"2":1,"1":2,"4294967294":3,"4294967295":4,"01":5,"-1":6,"1.5":7,"0":8,"":9}`,
		`{"\u0031":1,"0":0}`, `"\ud800\ud83d\ude00\udc00\uDBFF\uDFFF\udc00\ud800"`, `"\ud800\u0041"`,
		`[1e21,1e20,1.5e-7,0.000001,1e-7,-0,-0.0,0e5,1e400,-1e400,1e-400,-1e-400,9007199254740993]`,
		`[123456789012345678901234567890,0.1,5e-324,2e-324,1.7976931348623157e308,1.7976931348623159e308]`,
		`[100,1E2,1e+2,1.0e2,10e1,1000e-1,0.5e1,123.456e-10,1.23456789012345678e-9,4.35,0.30000000000000004]`,
		`[999999999999999999999,1e-6,1e-7,123e-20,1.5E+300,-1.5e-300,0.1e1,00.5]`,
		`"\u2028\u2029\u007f\/\u0000\u001f\b\f\n\r\t\"\\<>&\u00e9\u20AC\uFFFF\uFEFF"`,
		"\"\u2028\u2029\x7f/<>&é€\U0001F600\"", "  \t\r\n {  \"a\" \n: [ ] , \"b\" : { } }  \r\n",
		`true`, `false`, `null`, `0`, `-0`, `""`, `[]`, `{}`, `1E400`, `-1E-400`, `[1,]`, `{"a":1,}`, `01`, `1.`, `.5`,
		`NaN`, `Infinity`, `'a'`, `"a` + "\x01" + `"`, `{"a" 1}`, `[1 2]`, `"\x"`, `"\u12"`, "\ufeff{}", `{"a":1}}`,
	} {
		bs = append(bs, []byte(s))
	}
	deep := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	bs = append(bs, []byte(deep))
	var many strings.Builder
	many.WriteString("{")
	for i := range 300 {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `"k%d":%d,"%d":%d`, (i*7919)%101, i, (i*104729)%257, i)
	}
	many.WriteString("}")
	bs = append(bs, []byte(many.String()))
	return bs
}

// fuzzCorpus reads the bodies of the fuzz targets' checked-in corpus.
func fuzzCorpus(t *testing.T) [][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/fuzz/*/*")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var bs [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if lit, ok := strings.CutPrefix(line, "[]byte("); ok {
				s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
				require.NoError(t, err, "%s: %s", f, line)
				bs = append(bs, []byte(s))
			}
		}
	}
	return bs
}

// gen writes random JSON text in the spellings clients use: escapes where
// none are needed, surrogates paired and lone, numbers of every shape,
// duplicate and array-index keys, and whitespace.
type gen struct {
	rng *rand.Rand
	b   bytes.Buffer
}

func (g *gen) n(k int) int { return g.rng.IntN(k) }

func (g *gen) ws() {
	if g.n(4) == 0 {
		g.b.WriteString([]string{" ", "\n", "\t", "\r\n", "  "}[g.n(5)])
	}
}

func (g *gen) value(depth int) {
	g.ws()
	switch k := g.n(10); {
	case k < 2 && depth < 6:
		g.object(depth + 1)
	case k < 4 && depth < 6:
		g.array(depth + 1)
	case k < 6:
		g.str()
	case k < 9:
		g.number()
	default:
		g.b.WriteString([]string{"true", "false", "null"}[g.n(3)])
	}
	g.ws()
}

func (g *gen) array(depth int) {
	g.b.WriteByte('[')
	for i := range g.n(6) {
		if i > 0 {
			g.b.WriteByte(',')
		}
		g.value(depth)
	}
	g.ws()
	g.b.WriteByte(']')
}

var keyPool = []string{"a", "b", "id", "__proto__", "constructor", "toString", "0", "1", "2", "10", "9", "01", "-1", "1.5",
	"4294967294", "4294967295", "4294967296", "", " ", "é", "\\u0031", "\\u0061", "length", "007", "1e3"}

func (g *gen) object(depth int) {
	g.b.WriteByte('{')
	for i := range g.n(7) {
		if i > 0 {
			g.b.WriteByte(',')
		}
		g.ws()
		if g.n(2) == 0 {
			g.b.WriteString(`"` + keyPool[g.n(len(keyPool))] + `"`)
		} else if g.n(3) == 0 {
			g.b.WriteString(`"` + strconv.Itoa(g.n(40)) + `"`)
		} else {
			g.str()
		}
		g.ws()
		g.b.WriteByte(':')
		g.value(depth)
	}
	g.ws()
	g.b.WriteByte('}')
}

var runePool = []rune{'a', 'Z', ' ', '/', '<', '>', '&', '\'', 0x7f, 0x80, 0xe9, 0x2028, 0x2029, 0x20ac, 0xfeff, 0xfffd, 0xffff,
	0x1f600, 0x10ffff, 0x10000}

func (g *gen) str() {
	g.b.WriteByte('"')
	for range g.n(8) {
		switch k := g.n(12); {
		case k < 3:
			g.b.WriteRune(runePool[g.n(len(runePool))])
		case k < 4:
			g.b.WriteString([]string{`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`}[g.n(8)])
		case k < 6:
			g.escape(g.n(0x80)) // control characters and ASCII, escaped
		case k < 7:
			g.escape(0xd800 + g.n(0x800)) // a surrogate, most likely lone
		case k < 8:
			r := 0x10000 + g.n(0x100000) // a pair
			g.escape(0xd800 + (r-0x10000)>>10)
			g.escape(0xdc00 + (r-0x10000)&0x3ff)
		case k < 9:
			g.escape(g.n(0x10000))
		default:
			g.b.WriteByte(byte('a' + g.n(26)))
		}
	}
	g.b.WriteByte('"')
}

func (g *gen) escape(u int) {
	s := fmt.Sprintf(`\u%04x`, u)
	if g.n(2) == 0 {
		s = `\u` + strings.ToUpper(s[2:])
	}
	g.b.WriteString(s)
}

func (g *gen) number() {
	if g.n(3) == 0 {
		// A double's own shortest text, in one of its spellings.
		var f float64
		switch g.n(4) {
		case 0:
			f = g.rng.NormFloat64() * 1e6
		case 1:
			f = float64(g.rng.Int64()) * []float64{1, -1, 1e10, 1e-10}[g.n(4)]
		case 2:
			f = g.rng.Float64() * pow10(g.n(640)-330)
		default:
			f = float64(g.n(1000)) / float64(1+g.n(1000))
		}
		g.b.WriteString(strconv.FormatFloat(f, "eEfg"[g.n(4)], -1, 64))
		return
	}
	if g.n(4) == 0 {
		g.b.WriteByte('-')
	}
	if g.n(5) == 0 {
		g.b.WriteByte('0')
	} else {
		g.b.WriteByte(byte('1' + g.n(9)))
		for range g.n(25) {
			g.b.WriteByte(byte('0' + g.n(10)))
		}
	}
	if g.n(2) == 0 {
		g.b.WriteByte('.')
		for range 1 + g.n(20) {
			g.b.WriteByte(byte('0' + g.n(10)))
		}
	}
	if g.n(2) == 0 {
		g.b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[g.n(5)])
		g.b.WriteString(strconv.Itoa(g.n(420)))
	}
}

func pow10(e int) float64 {
	f, _ := strconv.ParseFloat("1e"+strconv.Itoa(e), 64)
	return f
}

// BenchmarkNormalizeJSON measures the normaliser on a typical small job
// and on a 64 KiB one, each already normal and as a client spelled it.
func BenchmarkNormalizeJSON(b *testing.B) {
	small := []byte(`{"example":"data","user":{"id":1234,"name":"Jos\u00e9"},"tags":["a","b"],"n":1.0}`)
	var big bytes.Buffer
	big.WriteString("[")
	for i := 0; big.Len() < 64<<10-200; i++ {
		if i > 0 {
			big.WriteString(",\n  ")
		}
		fmt.Fprintf(&big, `{"id": %d, "name": "user\u00e9%d", "score": %d.50, "ok": true}`, i, i, i)
	}
	big.WriteString("]")
	for _, c := range []struct {
		name string
		body []byte
	}{{"100B", small}, {"64KiB", big.Bytes()}} {
		norm, err := api.NormalizeJSON(c.body, 1<<20)
		require.NoError(b, err)
		for _, v := range []struct {
			name string
			body []byte
		}{{"spelled", c.body}, {"normal", norm}} {
			b.Run(c.name+"/"+v.name, func(b *testing.B) {
				b.SetBytes(int64(len(v.body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := api.NormalizeJSON(v.body, 1<<20); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
