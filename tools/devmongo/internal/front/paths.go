package front

import (
	"bytes"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// describeUpdate is the updateDescription of an update statement u that
// turned old into now, by the paths u names, as MongoDB's delta oplog
// entries make it (the server's src/mongo/db/update/v2_log_builder.cpp):
// a path that existed is named whole ("a.b"), a path that did not is
// named at its first new field (a $set of n.m on a document without n
// is {n: {m: ...}}), an element $push or $addToSet appended is named by
// its index ("arr.2"). An update it cannot read by paths (a pipeline,
// positional operators) is described field by field at the top level.
func describeUpdate(u bson.RawValue, old, now bson.Raw) bson.Raw {
	paths, ok := updatePaths(u)
	if !ok {
		return describe(old, now)
	}
	updated := bson.D{}
	removed := bson.A{}
	seen := map[string]bool{}
	for _, p := range paths {
		comps := strings.Split(p.path, ".")
		cp := comps
		oldV, had := lookupPath(old, comps)
		if !had {
			cp = firstMissing(old, comps)
			oldV, had = lookupPath(old, cp)
		}
		key := strings.Join(cp, ".")
		if seen[key] {
			continue
		}
		seen[key] = true
		newV, has := lookupPath(now, cp)
		switch {
		case !has && had:
			removed = append(removed, key)
		case !has:
		case had && (p.op == "$push" || p.op == "$addToSet") && oldV.Type == bson.TypeArray && newV.Type == bson.TypeArray:
			ov, _ := oldV.Array().Values()
			nv, _ := newV.Array().Values()
			if !isPrefix(ov, nv) {
				updated = append(updated, bson.E{Key: key, Value: newV})
				continue
			}
			for i := len(ov); i < len(nv); i++ {
				updated = append(updated, bson.E{Key: key + "." + strconv.Itoa(i), Value: nv[i]})
			}
		case !had || !sameValue(oldV, newV):
			updated = append(updated, bson.E{Key: key, Value: newV})
		}
	}
	b, _ := bson.Marshal(bson.D{
		{Key: "updatedFields", Value: updated},
		{Key: "removedFields", Value: removed},
		{Key: "truncatedArrays", Value: bson.A{}},
	})
	return b
}

type opPath struct{ op, path string }

// updatePaths lists the paths an operator update names ($rename: both
// its source and its target); ok is false for what it cannot read.
func updatePaths(u bson.RawValue) ([]opPath, bool) {
	d, ok := u.DocumentOK()
	if !ok {
		return nil, false
	}
	ops, err := d.Elements()
	if err != nil {
		return nil, false
	}
	var out []opPath
	for _, o := range ops {
		switch o.Key() {
		case "$set", "$unset", "$inc", "$mul", "$min", "$max", "$currentDate", "$push", "$addToSet", "$pop", "$pull", "$pullAll", "$bit", "$rename":
		case "$setOnInsert":
			continue // nothing on an update of an existing document
		default:
			return nil, false
		}
		fields, ok := o.Value().DocumentOK()
		if !ok {
			return nil, false
		}
		elems, _ := fields.Elements()
		for _, f := range elems {
			if strings.Contains(f.Key(), "$") {
				return nil, false // positional: which element is not in the path
			}
			out = append(out, opPath{o.Key(), f.Key()})
			if o.Key() == "$rename" {
				to, ok := f.Value().StringValueOK()
				if !ok {
					return nil, false
				}
				out = append(out, opPath{"$set", to})
			}
		}
	}
	return out, true
}

// lookupPath finds a dotted path in doc, through documents and array
// indexes.
func lookupPath(doc bson.Raw, comps []string) (bson.RawValue, bool) {
	v := bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: doc}
	for _, c := range comps {
		switch v.Type {
		case bson.TypeEmbeddedDocument:
			x, err := v.Document().LookupErr(c)
			if err != nil {
				return bson.RawValue{}, false
			}
			v = x
		case bson.TypeArray:
			i, err := strconv.Atoi(c)
			if err != nil || i < 0 {
				return bson.RawValue{}, false
			}
			x, err := v.Array().IndexErr(uint(i))
			if err != nil {
				return bson.RawValue{}, false
			}
			v = x
		default:
			return bson.RawValue{}, false
		}
	}
	return v, true
}

// firstMissing is comps up to its first component doc does not have.
func firstMissing(doc bson.Raw, comps []string) []string {
	for i := range comps {
		if _, ok := lookupPath(doc, comps[:i+1]); !ok {
			return comps[:i+1]
		}
	}
	return comps
}

func sameValue(a, b bson.RawValue) bool {
	return a.Type == b.Type && bytes.Equal(a.Value, b.Value)
}

func isPrefix(a, b []bson.RawValue) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if !sameValue(a[i], b[i]) {
			return false
		}
	}
	return true
}
