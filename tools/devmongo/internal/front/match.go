package front

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// matcher is a compiled $match stage over change events. It supports the
// query operators a change stream's filter uses: equality, $eq, $ne, $in,
// $nin, $exists, $gt, $gte, $lt, $lte, $and, $or and $nor, on dotted
// paths. Anything else is refused when the stream opens, never ignored.
type matcher func(doc bson.Raw) bool

func compileMatch(filter bson.Raw) (matcher, error) {
	elems, err := filter.Elements()
	if err != nil {
		return nil, err
	}
	var parts []matcher
	for _, e := range elems {
		key, val := e.Key(), e.Value()
		switch key {
		case "$and", "$or", "$nor":
			arr, ok := val.ArrayOK()
			if !ok {
				return nil, fmt.Errorf("%s must be an array", key)
			}
			vals, _ := arr.Values()
			if len(vals) == 0 {
				return nil, fmt.Errorf("%s must be a nonempty array", key)
			}
			var subs []matcher
			for _, v := range vals {
				d, ok := v.DocumentOK()
				if !ok {
					return nil, fmt.Errorf("%s entries must be objects", key)
				}
				m, err := compileMatch(d)
				if err != nil {
					return nil, err
				}
				subs = append(subs, m)
			}
			parts = append(parts, combine(key, subs))
		default:
			if strings.HasPrefix(key, "$") {
				return nil, fmt.Errorf("unknown top level operator: %s", key)
			}
			m, err := compileField(key, val)
			if err != nil {
				return nil, err
			}
			parts = append(parts, m)
		}
	}
	return combine("$and", parts), nil
}

func combine(op string, subs []matcher) matcher {
	return func(doc bson.Raw) bool {
		for _, m := range subs {
			ok := m(doc)
			switch {
			case op == "$and" && !ok:
				return false
			case op == "$or" && ok:
				return true
			case op == "$nor" && ok:
				return false
			}
		}
		return op != "$or"
	}
}

func compileField(path string, cond bson.RawValue) (matcher, error) {
	keys := strings.Split(path, ".")
	get := func(doc bson.Raw) (bson.RawValue, bool) {
		v, err := doc.LookupErr(keys...)
		return v, err == nil
	}
	ops, isOps := cond.DocumentOK()
	if isOps {
		if first, err := ops.IndexErr(0); err != nil || !strings.HasPrefix(first.Key(), "$") {
			isOps = false
		}
	}
	if !isOps {
		return func(doc bson.Raw) bool { v, ok := get(doc); return ok && equal(v, cond) }, nil
	}
	elems, _ := ops.Elements()
	var parts []matcher
	for _, e := range elems {
		op, arg := e.Key(), e.Value()
		var m matcher
		switch op {
		case "$eq":
			m = func(doc bson.Raw) bool { v, ok := get(doc); return ok && equal(v, arg) }
		case "$ne":
			m = func(doc bson.Raw) bool { v, ok := get(doc); return !ok || !equal(v, arg) }
		case "$in", "$nin":
			arr, ok := arg.ArrayOK()
			if !ok {
				return nil, fmt.Errorf("%s needs an array", op)
			}
			vals, _ := arr.Values()
			in := func(doc bson.Raw) bool {
				v, ok := get(doc)
				for _, w := range vals {
					if (ok && equal(v, w)) || (!ok && w.Type == bson.TypeNull) {
						return true
					}
				}
				return false
			}
			if op == "$in" {
				m = in
			} else {
				m = func(doc bson.Raw) bool { return !in(doc) }
			}
		case "$exists":
			want := truthy(arg)
			m = func(doc bson.Raw) bool { _, ok := get(doc); return ok == want }
		case "$gt", "$gte", "$lt", "$lte":
			m = func(doc bson.Raw) bool {
				v, ok := get(doc)
				if !ok {
					return false
				}
				c, ok := compare(v, arg)
				if !ok {
					return false
				}
				switch op {
				case "$gt":
					return c > 0
				case "$gte":
					return c >= 0
				case "$lt":
					return c < 0
				}
				return c <= 0
			}
		default:
			return nil, fmt.Errorf("unsupported $match operator %s in devmongo's change streams", op)
		}
		parts = append(parts, m)
	}
	return combine("$and", parts), nil
}

func truthy(v bson.RawValue) bool {
	if f, ok := number(v); ok {
		return f != 0
	}
	if b, ok := v.BooleanOK(); ok {
		return b
	}
	return v.Type != bson.TypeNull && v.Type != bson.TypeUndefined
}

func number(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return float64(v.Int32()), true
	case bson.TypeInt64:
		return float64(v.Int64()), true
	case bson.TypeDouble:
		return v.Double(), true
	}
	return 0, false
}

// equal compares as MongoDB's query equality does for the types events
// carry: numbers by value whatever their BSON type, the rest by type and
// bytes.
func equal(a, b bson.RawValue) bool {
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x == y
	}
	return a.Type == b.Type && bytes.Equal(a.Value, b.Value)
}

// compare orders numbers, strings, dates and timestamps; ok is false for
// values of other or different kinds.
func compare(a, b bson.RawValue) (int, bool) {
	if x, ok := number(a); ok {
		y, ok := number(b)
		if !ok || math.IsNaN(x) || math.IsNaN(y) {
			return 0, false
		}
		return cmp.Compare(x, y), true
	}
	if a.Type != b.Type {
		return 0, false
	}
	switch a.Type {
	case bson.TypeString:
		return strings.Compare(a.StringValue(), b.StringValue()), true
	case bson.TypeDateTime:
		return cmp.Compare(a.DateTime(), b.DateTime()), true
	case bson.TypeTimestamp:
		t1, i1 := a.Timestamp()
		t2, i2 := b.Timestamp()
		return cmp.Or(cmp.Compare(t1, t2), cmp.Compare(i1, i2)), true
	}
	return 0, false
}
