package deploycheck

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// mongoState is what mongosh finds when the database's healthcheck runs,
// as MongoDB answers it: rs.status() on a member whose set was never
// initiated fails with code 94, NotYetInitialized; on an initiated member it
// answers, or fails otherwise (a config that does not name this host, say).
// serverStatus answers in every state; its catalogStats (MongoDB 5.1 on)
// counts the user collections and views the catalog holds.
type mongoState struct {
	StatusError string          `json:"statusError"` // rs.status()'s codeName, "" when it answers
	Catalog     *map[string]int `json:"catalog"`     // serverStatus().catalogStats; nil on a server without it
	Primary     bool            `json:"primary"`     // hello().isWritablePrimary
}

// harness stands in for the three globals mongosh gives an --eval script
// (rs, db, quit) and records what the script did: whether it called
// rs.initiate and with what, what it printed, how it exited.
const harness = `
const state = JSON.parse(process.env.MONGO_STATE);
const seen = {initiate: null, printed: []};
function done(code) { console.log(JSON.stringify({exit: code, ...seen})); process.exit(0); }
globalThis.quit = done;
globalThis.print = (...a) => seen.printed.push(a.join(' '));
globalThis.rs = {
  status() {
    if (state.statusError) { const e = new Error(state.statusError); e.codeName = state.statusError; throw e; }
    return {ok: 1};
  },
  initiate(cfg) { if (seen.initiate) throw new Error('initiated twice'); seen.initiate = cfg; return {ok: 1}; },
};
globalThis.db = {
  serverStatus() { return state.catalog === null ? {ok: 1} : {ok: 1, catalogStats: state.catalog}; },
  hello() { return {isWritablePrimary: state.primary}; },
};
process.on('uncaughtException', (e) => { console.log(JSON.stringify({exit: 1, thrown: e.message, ...seen})); process.exit(0); });
`

type guardRun struct {
	Exit     int            `json:"exit"`
	Thrown   string         `json:"thrown"`
	Initiate map[string]any `json:"initiate"`
	Printed  []string       `json:"printed"`
}

// TestInitiateGuard runs the database's healthcheck script, as the stack
// renders it, under node with stand-ins for mongosh's rs and db: it
// initiates the set only on a data directory with neither a set config
// nor collections, and reports healthy only on the primary.
func TestInitiateGuard(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed, so the healthcheck's script was not run (checkReplicaSet still reads it)")
	}
	root := repoRoot(t)
	d, err := load(root, filepath.Join(root, "deploy"), operatorEnv(t))
	require.NoError(t, err)
	hc := d.stack.Services["database"].Healthcheck
	require.NotNil(t, hc)
	require.Equal(t, []string{"CMD", "mongosh", "--quiet", "--norc", "--eval"}, hc.Test[:len(hc.Test)-1])
	script := hc.Test[len(hc.Test)-1]

	catalog := func(collections, views int) *map[string]int {
		return &map[string]int{"collections": collections, "views": views, "internalCollections": 9}
	}
	for _, tc := range []struct {
		name     string
		state    mongoState
		exit     int
		initiate bool
		printed  string
		thrown   string
	}{
		{name: "new data directory", state: mongoState{StatusError: "NotYetInitialized", Catalog: catalog(0, 0)}, exit: 1, initiate: true},
		{name: "collections but no set config", state: mongoState{StatusError: "NotYetInitialized", Catalog: catalog(2, 0)}, exit: 1, printed: "rs0 not initiated"},
		{name: "views but no set config", state: mongoState{StatusError: "NotYetInitialized", Catalog: catalog(0, 1)}, exit: 1, printed: "rs0 not initiated"},
		{name: "server without catalogStats", state: mongoState{StatusError: "NotYetInitialized"}, exit: 1, printed: "rs0 not initiated"},
		{name: "another set's config", state: mongoState{StatusError: "InvalidReplicaSetConfig", Catalog: catalog(0, 0)}, exit: 1, thrown: "InvalidReplicaSetConfig"},
		{name: "primary", state: mongoState{Catalog: catalog(3, 0), Primary: true}, exit: 0},
		{name: "not yet primary", state: mongoState{Catalog: catalog(3, 0)}, exit: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			state, err := json.Marshal(tc.state)
			require.NoError(t, err)
			cmd := exec.Command(node, "-e", harness+"\n"+script)
			cmd.Env = []string{"MONGO_STATE=" + string(state)}
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			var got guardRun
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &got), "%s", out)
			require.Equal(t, tc.exit, got.Exit, "exit code: %+v", got)
			require.Equal(t, tc.thrown, got.Thrown)
			if !tc.initiate {
				require.Nil(t, got.Initiate, "rs.initiate ran")
			} else {
				require.Equal(t, "rs0", got.Initiate["_id"])
				require.Equal(t, `[{"_id":0,"host":"database:27017"}]`, mustJSON(t, got.Initiate["members"]))
			}
			if tc.printed != "" {
				require.Contains(t, strings.Join(got.Printed, "\n"), tc.printed)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
