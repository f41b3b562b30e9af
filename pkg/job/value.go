package job

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Value is what a handler returned: one JSON value, kept as compact JSON
// text. In MongoDB it is stored as the BSON the JSON reads as (objects as
// documents in their key order, integers as 64-bit integers or, past
// that, decimals, other numbers as doubles), so the database can query
// it; it reads back as the same JSON. The zero Value is no result.
type Value []byte

// Result encodings, in Result.ResultEncoding.
const (
	// EncodingBase64: the handler's output was not UTF-8 text; Result is
	// a JSON string holding it in standard base64.
	EncodingBase64 = "base64"
)

// ValueOf turns a handler's raw output into a result: nothing for empty
// (or blank) output; the JSON value itself for valid JSON whose keys
// MongoDB stores as they are (none starting with "$" or holding "." or
// NUL); any other UTF-8 text as a JSON string of it; and other bytes as a
// base64 string, encoding saying so.
func ValueOf(out []byte) (v Value, encoding string) {
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) == 0 {
		return nil, ""
	}
	if json.Valid(trimmed) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, trimmed); err == nil && storableKeys(buf.Bytes()) {
			return Value(buf.Bytes()), ""
		}
	}
	if utf8.Valid(out) {
		return textValue(string(out)), ""
	}
	return textValue(base64.StdEncoding.EncodeToString(out)), EncodingBase64
}

func textValue(s string) Value {
	var buf bytes.Buffer
	appendString(&buf, s)
	return Value(buf.Bytes())
}

// appendString writes s as a JSON string, leaving <, > and & as they are
// (the API's own encoder escapes what it must).
func appendString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a string always encodes
	buf.Truncate(buf.Len() - 1) // Encode's newline
}

// storableKeys reports whether every object key in the valid JSON js is
// one MongoDB and FerretDB store unchanged.
func storableKeys(js []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(js))
	var inObject []bool // per open container: is it an object
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return errors.Is(err, io.EOF)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				inObject = append(inObject, true)
				expectKey = true
				continue
			case '[':
				inObject = append(inObject, false)
				expectKey = false
				continue
			default:
				inObject = inObject[:len(inObject)-1]
			}
		case string:
			if expectKey && (strings.HasPrefix(t, "$") || strings.ContainsAny(t, ".\x00")) {
				return false
			}
			if expectKey {
				expectKey = false
				continue
			}
		}
		// a value ended: in an object, a key comes next
		expectKey = len(inObject) > 0 && inObject[len(inObject)-1]
	}
}

// MarshalJSON returns v itself, or null for no result.
func (v Value) MarshalJSON() ([]byte, error) {
	if len(v) == 0 {
		return []byte("null"), nil
	}
	return v, nil
}

// UnmarshalJSON keeps a copy of b, compacted.
func (v *Value) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*v = nil
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return err
	}
	*v = Value(buf.Bytes())
	return nil
}

// MarshalBSONValue stores v as the BSON its JSON reads as.
func (v Value) MarshalBSONValue() (byte, []byte, error) {
	if len(v) == 0 {
		return byte(bson.TypeNull), nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	x, err := readJSON(dec)
	if err != nil {
		return 0, nil, fmt.Errorf("result is not JSON: %w", err)
	}
	t, data, err := bson.MarshalValue(x)
	return byte(t), data, err
}

// readJSON reads one JSON value as BSON-ready Go values, objects as
// bson.D to keep their key order.
func readJSON(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			d := bson.D{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				val, err := readJSON(dec)
				if err != nil {
					return nil, err
				}
				d = append(d, bson.E{Key: k.(string), Value: val})
			}
			_, err := dec.Token() // '}'
			return d, err
		case '[':
			a := bson.A{}
			for dec.More() {
				val, err := readJSON(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, val)
			}
			_, err := dec.Token() // ']'
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case json.Number:
		return number(t)
	default: // string, bool, nil
		return t, nil
	}
}

// number is n as an int64 when it is an integer that fits, as a decimal
// when it is an integer that does not, and as a double otherwise.
func number(n json.Number) (any, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if d, err := bson.ParseDecimal128(s); err == nil {
			return d, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, err
	}
	if math.IsInf(f, 0) {
		return nil, fmt.Errorf("number %s is out of range", s)
	}
	return f, nil
}

// UnmarshalBSONValue reads a stored result back as JSON.
func (v *Value) UnmarshalBSONValue(t byte, data []byte) error {
	if bson.Type(t) == bson.TypeNull || bson.Type(t) == bson.TypeUndefined {
		*v = nil
		return nil
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, bson.RawValue{Type: bson.Type(t), Value: data}); err != nil {
		return fmt.Errorf("read stored result: %w", err)
	}
	*v = Value(buf.Bytes())
	return nil
}

// writeJSON writes rv as JSON; types JSON has no word for (dates, ids,
// binaries written by hand into the database) as their relaxed Extended
// JSON.
func writeJSON(buf *bytes.Buffer, rv bson.RawValue) error {
	switch rv.Type {
	case bson.TypeEmbeddedDocument, bson.TypeArray:
		isDoc := rv.Type == bson.TypeEmbeddedDocument
		elems, err := bson.Raw(rv.Value).Elements()
		if err != nil {
			return err
		}
		buf.WriteByte("[{"[b2i(isDoc)])
		for i, e := range elems {
			if i > 0 {
				buf.WriteByte(',')
			}
			if isDoc {
				appendString(buf, e.Key())
				buf.WriteByte(':')
			}
			if err := writeJSON(buf, e.Value()); err != nil {
				return err
			}
		}
		buf.WriteByte("]}"[b2i(isDoc)])
		return nil
	case bson.TypeString:
		appendString(buf, rv.StringValue())
	case bson.TypeInt32:
		buf.WriteString(strconv.FormatInt(int64(rv.Int32()), 10))
	case bson.TypeInt64:
		buf.WriteString(strconv.FormatInt(rv.Int64(), 10))
	case bson.TypeDouble:
		f := rv.Double()
		if math.IsInf(f, 0) || math.IsNaN(f) {
			buf.WriteString("null")
			return nil
		}
		buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	case bson.TypeDecimal128:
		buf.WriteString(rv.Decimal128().String())
	case bson.TypeBoolean:
		buf.WriteString(strconv.FormatBool(rv.Boolean()))
	case bson.TypeNull, bson.TypeUndefined:
		buf.WriteString("null")
	default:
		doc := bson.D{{Key: "v", Value: rv}}
		ext, err := bson.MarshalExtJSON(doc, false, false)
		if err != nil {
			return err
		}
		var w struct {
			V json.RawMessage `json:"v"`
		}
		if err := json.Unmarshal(ext, &w); err != nil {
			return err
		}
		buf.Write(w.V)
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
