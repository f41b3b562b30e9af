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
	raw := bson.Raw(b)
	v, err := raw.LookupErr("_id")
	if err != nil || v.Type != bson.TypeString {
		return bson.Unmarshal(b, (*plain)(r))
	}
	id, err := strconv.ParseUint(v.StringValue(), 10, 64)
	if err != nil {
		return fmt.Errorf("result _id %q: not a job id: %w", v.StringValue(), err)
	}
	elems, err := raw.Elements()
	if err != nil {
		return fmt.Errorf("decode result %d: %w", id, err)
	}
	i, doc := bsoncore.AppendDocumentStart(make([]byte, 0, len(b)))
	for _, e := range elems {
		if e.Key() != "_id" {
			doc = append(doc, e...)
		}
	}
	doc, err = bsoncore.AppendDocumentEnd(doc, i)
	if err != nil {
		return fmt.Errorf("decode result %d: %w", id, err)
	}
	if err := bson.Unmarshal(doc, (*plain)(r)); err != nil {
		return err
	}
	r.ID = id
	return nil
}
