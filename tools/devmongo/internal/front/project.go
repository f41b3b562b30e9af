package front

import (
	"bytes"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// stage is one compiled stage after $changeStream: it returns the event
// it passes on, or false when it filters the event out.
type stage func(doc bson.Raw) (bson.Raw, bool)

func matchStage(m matcher) stage {
	return func(doc bson.Raw) (bson.Raw, bool) { return doc, m(doc) }
}

// runStages passes doc through the stages.
func runStages(stages []stage, doc bson.Raw) (bson.Raw, bool) {
	for _, s := range stages {
		var ok bool
		if doc, ok = s(doc); !ok {
			return nil, false
		}
	}
	return doc, true
}

// idKept is MongoDB's check that the stages left the event's _id, its
// resume token, as it was (280 otherwise: the server's
// document_source_change_stream_ensure_resume_token_present.cpp and
// change_stream_pipeline_helpers, "Encountered an event whose _id field
// ... was modified by the pipeline").
func idKept(before, after bson.Raw) []byte {
	a, errA := before.LookupErr("_id")
	b, errB := after.LookupErr("_id")
	if errA == nil && errB == nil && a.Type == b.Type && bytes.Equal(a.Value, b.Value) {
		return nil
	}
	return labelledError(codeChangeStreamFatal, "ChangeStreamFatalError", "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point. Only transformations that retain the unmodified _id field are allowed.", labelNonResumable)
}

// compileProject compiles the part of $project a change stream's
// pipeline uses: fields included (1, true) or excluded (0, false), on
// dotted paths; field paths ("$operationType"); literal strings and
// other scalars; nested documents of those. Operator expressions
// ({$concat: ...}) are refused, never ignored.
func compileProject(spec bson.Raw) (stage, error) {
	elems, err := spec.Elements()
	if err != nil || len(elems) == 0 {
		return nil, fmt.Errorf("$project specification must have at least one field")
	}
	exclusion, inclusion := false, false
	keepID := true
	for _, e := range elems {
		v := e.Value()
		if e.Key() == "_id" && isFlag(v) {
			keepID = truthy(v)
			continue
		}
		switch {
		case isFlag(v) && !truthy(v):
			exclusion = true
		default:
			inclusion = true
		}
		if err := checkExpr(v); err != nil {
			return nil, err
		}
	}
	if exclusion && inclusion {
		return nil, fmt.Errorf("Invalid $project :: caused by :: Cannot do exclusion on a field in inclusion projection")
	}
	if !inclusion {
		return func(doc bson.Raw) (bson.Raw, bool) {
			d := toD(doc)
			for _, e := range elems {
				if e.Key() != "_id" || !keepID {
					d = unsetPath(d, strings.Split(e.Key(), "."))
				}
			}
			b, _ := bson.Marshal(d)
			return b, true
		}, nil
	}
	return func(doc bson.Raw) (bson.Raw, bool) {
		out := bson.D{}
		if id, err := doc.LookupErr("_id"); err == nil && keepID {
			out = append(out, bson.E{Key: "_id", Value: id})
		}
		for _, e := range elems {
			if e.Key() == "_id" && isFlag(e.Value()) {
				continue
			}
			out = project(out, doc, doc, strings.Split(e.Key(), "."), e.Value())
		}
		b, _ := bson.Marshal(out)
		return b, true
	}, nil
}

// project sets path in out to what spec v makes of cur (the input at
// that level) and root (the whole event, for field paths).
func project(out bson.D, root, cur bson.Raw, path []string, v bson.RawValue) bson.D {
	switch {
	case isFlag(v):
		if x, ok := lookupPath(cur, path); ok {
			return setPath(out, path, x)
		}
		return out
	case v.Type == bson.TypeString && strings.HasPrefix(v.StringValue(), "$"):
		if x, ok := lookupPath(root, strings.Split(v.StringValue()[1:], ".")); ok {
			return setPath(out, path, x)
		}
		return out
	case v.Type == bson.TypeEmbeddedDocument:
		sub, _ := lookupPath(cur, path)
		subDoc, _ := sub.DocumentOK()
		if subDoc == nil {
			subDoc = bson.Raw(emptyDoc)
		}
		var inner bson.D
		elems, _ := v.Document().Elements()
		for _, e := range elems {
			inner = project(inner, root, subDoc, strings.Split(e.Key(), "."), e.Value())
		}
		if inner == nil {
			inner = bson.D{}
		}
		return setPath(out, path, inner)
	}
	return setPath(out, path, v) // a literal
}

// isFlag: numbers and booleans are inclusion (non-zero, true) or
// exclusion flags in $project.
func isFlag(v bson.RawValue) bool {
	_, num := number(v)
	return num || v.Type == bson.TypeBoolean
}

func checkExpr(v bson.RawValue) error {
	d, ok := v.DocumentOK()
	if !ok {
		if v.Type == bson.TypeArray {
			return fmt.Errorf("devmongo's $project does not support array expressions")
		}
		return nil
	}
	elems, _ := d.Elements()
	for _, e := range elems {
		if strings.HasPrefix(e.Key(), "$") {
			return fmt.Errorf("devmongo's $project does not support the expression %s", e.Key())
		}
		if err := checkExpr(e.Value()); err != nil {
			return err
		}
	}
	return nil
}

// toD decodes doc one level deep; nested documents stay raw.
func toD(doc bson.Raw) bson.D {
	elems, _ := doc.Elements()
	d := make(bson.D, 0, len(elems))
	for _, e := range elems {
		d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return d
}

// setPath sets the dotted path in d, making documents on the way.
func setPath(d bson.D, path []string, v any) bson.D {
	for i, e := range d {
		if e.Key != path[0] {
			continue
		}
		if len(path) == 1 {
			d[i].Value = v
			return d
		}
		var sub bson.D
		switch x := e.Value.(type) {
		case bson.D:
			sub = x
		case bson.RawValue:
			if r, ok := x.DocumentOK(); ok {
				sub = toD(r)
			}
		}
		d[i].Value = setPath(sub, path[1:], v)
		return d
	}
	if len(path) == 1 {
		return append(d, bson.E{Key: path[0], Value: v})
	}
	return append(d, bson.E{Key: path[0], Value: setPath(bson.D{}, path[1:], v)})
}

// unsetPath removes the dotted path from d.
func unsetPath(d bson.D, path []string) bson.D {
	for i, e := range d {
		if e.Key != path[0] {
			continue
		}
		if len(path) == 1 {
			return append(d[:i:i], d[i+1:]...)
		}
		if r, ok := e.Value.(bson.RawValue); ok {
			if sub, ok := r.DocumentOK(); ok {
				d[i].Value = unsetPath(toD(sub), path[1:])
			}
		}
		return d
	}
	return d
}
