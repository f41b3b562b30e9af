package job

import (
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// UnmarshalBSON decodes a stored result. Its _id is a number, except in
// the layout package store uses on FerretDB, which keys a result by its
// id's decimal digits (a string FerretDB can look up by index): both
// decode to the same Result, wherever the document comes from (a read,
// a change event).
func (r *Result) UnmarshalBSON(b []byte) error {
	type plain Result // without this method
	return unmarshalKeyed(b, "result", (*plain)(r), &r.ID)
}

// UnmarshalBSON decodes a stored failure record, whose _id is a number
// or, in package store's FerretDB layout, the id's decimal digits, as a
// Result's.
func (f *Failure) UnmarshalBSON(b []byte) error {
	type plain Failure // without this method
	return unmarshalKeyed(b, "failure record", (*plain)(f), &f.ID)
}

// unmarshalKeyed decodes document b into v, whose _id field is id: a
// numeric _id as it is, a string one as the number it spells (decoded
// apart, the rest of b into v).
func unmarshalKeyed(b []byte, what string, v any, id *uint64) error {
	raw := bson.Raw(b)
	key, err := raw.LookupErr("_id")
	if err != nil || key.Type != bson.TypeString {
		return bson.Unmarshal(b, v)
	}
	n, err := strconv.ParseUint(key.StringValue(), 10, 64)
	if err != nil {
		return fmt.Errorf("%s _id %q: not a job id: %w", what, key.StringValue(), err)
	}
	elems, err := raw.Elements()
	if err != nil {
		return fmt.Errorf("decode %s %d: %w", what, n, err)
	}
	i, doc := bsoncore.AppendDocumentStart(make([]byte, 0, len(b)))
	for _, e := range elems {
		if e.Key() != "_id" {
			doc = append(doc, e...)
		}
	}
	doc, err = bsoncore.AppendDocumentEnd(doc, i)
	if err != nil {
		return fmt.Errorf("decode %s %d: %w", what, n, err)
	}
	if err := bson.Unmarshal(doc, v); err != nil {
		return err
	}
	*id = n
	return nil
}
