package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/config"
)

func env(m map[string]string) config.Getenv { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	r := config.NewReader(env(nil))
	require.Equal(t, "127.0.0.1:11300", r.Beanstalk().Addr())
	m := r.Mongo()
	require.Equal(t, config.Mongo{URL: "mongodb://127.0.0.1:27017", DB: "jobs", Collection: "completed", Server: "auto"}, m)
	require.NoError(t, r.Err())
}

func TestEveryBadValueIsNamed(t *testing.T) {
	t.Parallel()
	r := config.NewReader(env(map[string]string{
		"BEANSTALK_PORT": "70000",
		"MONGO_URL":      "http://x",
		"MONGO_SERVER":   "postgres",
		"D":              "-1s",
		"B":              "maybe",
		"L":              " , ",
	}))
	r.Beanstalk()
	r.Mongo()
	r.Duration("D", time.Second, 0)
	r.Bool("B", false)
	r.List("L", nil)
	err := r.Err()
	require.Error(t, err)
	for _, name := range []string{"BEANSTALK_PORT", "MONGO_URL", "MONGO_SERVER", "D:", "B:", "L:"} {
		require.Contains(t, err.Error(), name)
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "0.5": 500 * time.Millisecond, "1m": time.Minute, "250ms": 250 * time.Millisecond} {
		got, err := config.ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "-2s", "abc", "1e300"} {
		_, err := config.ParseDuration(in)
		require.Error(t, err, in)
	}
}

func TestDotEnvUnderEnvironment(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), ".env")
	require.NoError(t, os.WriteFile(path, []byte("# comment\nBEANSTALK_HOST=queue\nMONGO_DB=\"fromfile\"\n"), 0o600))
	getenv, err := config.WithDotEnv(env(map[string]string{"MONGO_DB": "fromenv"}), path)
	require.NoError(t, err)
	require.Equal(t, "queue", getenv("BEANSTALK_HOST"))
	require.Equal(t, "fromenv", getenv("MONGO_DB"))

	_, err = config.WithDotEnv(env(nil), filepath.Join(t.TempDir(), "missing"))
	require.NoError(t, err)
}

func TestAPIToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	good, empty, spaced := write("good", " s3cret-token\n"), write("empty", "\n"), write("spaced", "two words")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
		err  string // the variable named, and what is said
	}{
		{"none", nil, "", ""},
		{"variable", map[string]string{"API_TOKEN": "abc"}, "abc", ""},
		{"file, trimmed", map[string]string{"API_TOKEN_FILE": good}, "s3cret-token", ""},
		{"both", map[string]string{"API_TOKEN": "abc", "API_TOKEN_FILE": good}, "", "API_TOKEN_FILE: set API_TOKEN or API_TOKEN_FILE, not both"},
		{"missing file", map[string]string{"API_TOKEN_FILE": filepath.Join(dir, "nope")}, "", "API_TOKEN_FILE: \"" + filepath.Join(dir, "nope") + "\" does not exist"},
		{"empty file", map[string]string{"API_TOKEN_FILE": empty}, "", "API_TOKEN_FILE: \"" + empty + "\" is empty"},
		{"space in the file", map[string]string{"API_TOKEN_FILE": spaced}, "", "API_TOKEN_FILE: the token may hold only visible ASCII"},
		{"not ASCII", map[string]string{"API_TOKEN": "clé"}, "", "API_TOKEN: the token may hold only visible ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := config.NewReader(env(tc.env))
			require.Equal(t, tc.want, r.APIToken())
			if tc.err == "" {
				require.NoError(t, r.Err())
				return
			}
			require.ErrorContains(t, r.Err(), tc.err)
		})
	}
}

// Open reads the .env file of the working directory under the real
// environment, and the shared settings from both.
func TestOpenReadsTheDotEnvUnderTheEnvironment(t *testing.T) {
	t.Chdir(t.TempDir())
	require.NoError(t, os.WriteFile(".env", []byte("MONGO_DB=fromfile\nBEANSTALK_PORT=11301\nLOG_LEVEL=debug\n"), 0o600))
	r, s, err := config.Open(env(map[string]string{"BEANSTALK_PORT": "11302"}), true)
	require.NoError(t, err)
	require.NoError(t, r.Err())
	require.Equal(t, "fromfile", s.Mongo.DB)
	require.Equal(t, 11302, s.Beanstalk.Port, "the environment wins")
	require.Equal(t, config.Log{Format: "text", Level: "debug"}, s.Log)
	require.Equal(t, "fromfile", r.String("", "MONGO_DB"), "the Reader sees the file too")

	require.NoError(t, os.WriteFile(".env", []byte("NOT A LINE\n"), 0o600))
	_, _, err = config.Open(env(nil), false)
	require.ErrorContains(t, err, ".env")
}
