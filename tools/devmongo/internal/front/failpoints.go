package front

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Fail points: the part of MongoDB's configureFailPoint test command
// that the drivers' and the change-streams spec's tests use to make a
// server fail on demand (src/mongo/db/commands/fail_point_cmd.cpp and
// the failCommand fail point in service_entry_point_common.cpp):
//
//	{configureFailPoint: "failCommand", mode: {times: n} | "alwaysOn" | "off",
//	 data: {failCommands: [...], errorCode, errorLabels, closeConnection, appName}}
//	{configureFailPoint: "failGetMoreAfterCursorCheckout", mode: ..., data: {errorCode, closeConnection}}
//
// failCommand answers errorCode with exactly the errorLabels given (none
// when none are: the spec's "change stream does not resume if error does
// not contain ResumableChangeStreamError" relies on it);
// failGetMoreAfterCursorCheckout fails inside the getMore, so its error
// gets the labels MongoDB adds itself (ResumableChangeStreamError on a
// change stream's getMore for the codes of error_labels.cpp's
// isResumableChangeStreamError). closeConnection closes the client's
// connection instead of answering. devmongo always
// has these test commands, as a mongod started with enableTestCommands.

// errCloseConnection ends a client connection without an answer.
var errCloseConnection = errors.New("fail point: close the connection")

type failPoint struct {
	times    int // -1: always
	commands map[string]bool
	code     int32
	labels   []string
	auto     bool // failGetMoreAfterCursorCheckout: MongoDB's own labels
	close    bool
	appName  string // only the connections of this application, when set
}

type failPoints struct {
	mu sync.Mutex
	m  map[string]*failPoint
}

// configure answers configureFailPoint.
func (fps *failPoints) configure(cmd command) []byte {
	if db, _ := cmd.body.Lookup("$db").StringValueOK(); db != "admin" {
		return errorBody(13, "Unauthorized", "configureFailPoint may only be run against the admin database.")
	}
	name, _ := cmd.body.Lookup("configureFailPoint").StringValueOK()
	switch name {
	case "failCommand", "failGetMoreAfterCursorCheckout":
	default:
		return errorBody(codeBadValue, "BadValue", fmt.Sprintf("devmongo has no fail point %q (it has failCommand and failGetMoreAfterCursorCheckout)", name))
	}
	fp := &failPoint{commands: map[string]bool{}}
	mode := cmd.body.Lookup("mode")
	if s, ok := mode.StringValueOK(); ok {
		switch s {
		case "off":
			fps.mu.Lock()
			delete(fps.m, name)
			fps.mu.Unlock()
			return okBody()
		case "alwaysOn":
			fp.times = -1
		default:
			return errorBody(codeBadValue, "BadValue", fmt.Sprintf("unknown fail point mode %q", s))
		}
	} else if d, ok := mode.DocumentOK(); ok {
		n, ok := asInt(d.Lookup("times"))
		if !ok || n < 1 {
			return errorBody(codeBadValue, "BadValue", "devmongo's fail point modes are off, alwaysOn and {times: n}")
		}
		fp.times = int(n)
	} else {
		return errorBody(codeTypeMismatch, "TypeMismatch", "mode must be a string or an object")
	}
	if name == "failGetMoreAfterCursorCheckout" {
		fp.commands["getmore"] = true
		fp.auto = true
	}
	data, _ := cmd.body.Lookup("data").DocumentOK()
	elems, _ := data.Elements()
	for _, e := range elems {
		switch e.Key() {
		case "failCommands":
			arr, ok := e.Value().ArrayOK()
			if !ok || name != "failCommand" {
				return errorBody(codeBadValue, "BadValue", "failCommands must be an array, of failCommand")
			}
			vals, _ := arr.Values()
			for _, v := range vals {
				fp.commands[strings.ToLower(v.StringValue())] = true
			}
		case "errorCode":
			n, ok := asInt(e.Value())
			if !ok {
				return errorBody(codeTypeMismatch, "TypeMismatch", "errorCode must be a number")
			}
			fp.code = int32(n)
		case "errorLabels":
			arr, ok := e.Value().ArrayOK()
			if !ok {
				return errorBody(codeTypeMismatch, "TypeMismatch", "errorLabels must be an array")
			}
			vals, _ := arr.Values()
			fp.labels = []string{}
			for _, v := range vals {
				fp.labels = append(fp.labels, v.StringValue())
			}
		case "closeConnection":
			fp.close, _ = e.Value().BooleanOK()
		case "appName":
			fp.appName, _ = e.Value().StringValueOK()
		default:
			// Never ignored: a test that relies on it would pass for
			// the wrong reason.
			return errorBody(codeBadValue, "BadValue", fmt.Sprintf("devmongo's fail points do not support data.%s", e.Key()))
		}
	}
	if fp.code == 0 && !fp.close {
		return errorBody(codeBadValue, "BadValue", "a fail point needs errorCode or closeConnection")
	}
	fps.mu.Lock()
	if fps.m == nil {
		fps.m = map[string]*failPoint{}
	}
	fps.m[name] = fp
	fps.mu.Unlock()
	return okBody()
}

// trip returns the answer of a fail point that fires for command name
// (lower case) of application appName, changeStream saying the command
// is a change stream's;
// ok is false when none fires.
func (fps *failPoints) trip(name, appName string, changeStream bool) (body []byte, closeConn, ok bool) {
	fps.mu.Lock()
	defer fps.mu.Unlock()
	for key, fp := range fps.m {
		if !fp.commands[name] || (fp.appName != "" && fp.appName != appName) {
			continue
		}
		if fp.times > 0 {
			fp.times--
			if fp.times == 0 {
				delete(fps.m, key)
			}
		}
		if fp.close {
			return nil, true, true
		}
		labels := fp.labels
		if fp.auto && changeStream && resumableChangeStreamCode(fp.code) {
			labels = []string{"ResumableChangeStreamError"}
		}
		return labelledError(fp.code, "", fmt.Sprintf("Failing command %s via '%s' failpoint", name, key), labels...), false, true
	}
	return nil, false, false
}

// resumableChangeStreamCode: the codes error_labels.cpp labels
// ResumableChangeStreamError on a change stream's aggregate or getMore
// (retriable, network and need-retargetting errors, RetryChangeStream,
// FailedToSatisfyReadPreference).
func resumableChangeStreamCode(code int32) bool {
	switch code {
	case 6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, // retriable and network
		63, 150, 13388, // stale shard version, epoch, config
		234, 133: // RetryChangeStream, FailedToSatisfyReadPreference
		return true
	}
	return false
}

func okBody() []byte {
	b, _ := bson.Marshal(bson.D{{Key: "ok", Value: float64(1)}})
	return b
}
