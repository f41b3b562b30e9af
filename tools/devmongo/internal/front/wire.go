package front

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Opcodes of the MongoDB wire protocol this front reads.
const (
	opReply      = 1
	opQuery      = 2004
	opCompressed = 2012
	opMsg        = 2013
)

// OP_MSG flag bits.
const (
	flagChecksum   = 1 << 0
	flagMoreToCome = 1 << 1
)

// maxMessage bounds a message read from a client or from FerretDB: the
// 48 MB that MongoDB's hello announces (maxMessageSizeBytes).
const maxMessage = 48_000_000

// message is one wire message, whole, header included.
type message []byte

func (m message) requestID() int32  { return int32(binary.LittleEndian.Uint32(m[4:])) }
func (m message) responseTo() int32 { return int32(binary.LittleEndian.Uint32(m[8:])) }
func (m message) opcode() int32     { return int32(binary.LittleEndian.Uint32(m[12:])) }

// flags are an OP_MSG's flag bits.
func (m message) flags() uint32 {
	if m.opcode() != opMsg || len(m) < 20 {
		return 0
	}
	return binary.LittleEndian.Uint32(m[16:])
}

func readMessage(r io.Reader) (message, error) {
	var head [16]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.LittleEndian.Uint32(head[:])))
	if n < 16 || n > maxMessage {
		return nil, fmt.Errorf("message length %d out of range", n)
	}
	m := make(message, n)
	copy(m, head[:])
	if _, err := io.ReadFull(r, m[16:]); err != nil {
		return nil, err
	}
	return m, nil
}

// command is a parsed OP_MSG request: its body and its document
// sequences (kind 1 sections), which the driver uses for the documents
// of insert, update and delete.
type command struct {
	body bson.Raw
	seqs map[string][]bson.Raw
}

var errMalformed = errors.New("malformed OP_MSG")

func parseMsg(m message) (command, error) {
	var c command
	if m.opcode() != opMsg || len(m) < 21 {
		return c, errMalformed
	}
	b := m[20:]
	if m.flags()&flagChecksum != 0 {
		if len(b) < 4 {
			return c, errMalformed
		}
		b = b[:len(b)-4]
	}
	for len(b) > 0 {
		kind := b[0]
		b = b[1:]
		switch kind {
		case 0:
			doc, rest, err := readDoc(b)
			if err != nil {
				return c, err
			}
			c.body, b = doc, rest
		case 1:
			if len(b) < 4 {
				return c, errMalformed
			}
			size := int(int32(binary.LittleEndian.Uint32(b)))
			if size < 5 || size > len(b) {
				return c, errMalformed
			}
			sec := b[4:size]
			b = b[size:]
			i := indexByte(sec, 0)
			if i < 0 {
				return c, errMalformed
			}
			id := string(sec[:i])
			sec = sec[i+1:]
			if c.seqs == nil {
				c.seqs = map[string][]bson.Raw{}
			}
			for len(sec) > 0 {
				doc, rest, err := readDoc(sec)
				if err != nil {
					return c, err
				}
				c.seqs[id] = append(c.seqs[id], doc)
				sec = rest
			}
		default:
			return c, errMalformed
		}
	}
	if c.body == nil {
		return c, errMalformed
	}
	return c, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func readDoc(b []byte) (bson.Raw, []byte, error) {
	if len(b) < 5 {
		return nil, nil, errMalformed
	}
	n := int(int32(binary.LittleEndian.Uint32(b)))
	if n < 5 || n > len(b) {
		return nil, nil, errMalformed
	}
	return bson.Raw(b[:n]), b[n:], nil
}

// name is the command's name: the body's first key.
func (c command) name() string {
	e, err := c.body.IndexErr(0)
	if err != nil {
		return ""
	}
	return e.Key()
}

// docs returns the array field key of the body or, when the driver sent
// it as a document sequence, that sequence.
func (c command) docs(key string) []bson.Raw {
	if s, ok := c.seqs[key]; ok {
		return s
	}
	arr, ok := c.body.Lookup(key).ArrayOK()
	if !ok {
		return nil
	}
	vals, _ := arr.Values()
	out := make([]bson.Raw, 0, len(vals))
	for _, v := range vals {
		if d, ok := v.DocumentOK(); ok {
			out = append(out, d)
		}
	}
	return out
}

// msgReply builds an OP_MSG answer to request req with body.
func msgReply(reqID int32, body []byte) message {
	n := 16 + 4 + 1 + len(body)
	m := make(message, n)
	binary.LittleEndian.PutUint32(m[0:], uint32(n))
	binary.LittleEndian.PutUint32(m[4:], uint32(nextReplyID()))
	binary.LittleEndian.PutUint32(m[8:], uint32(reqID))
	binary.LittleEndian.PutUint32(m[12:], opMsg)
	m[20] = 0
	copy(m[21:], body)
	return m
}

// replyBody returns the body of an OP_MSG reply.
func replyBody(m message) (bson.Raw, error) {
	c, err := parseMsg(m)
	if err != nil {
		return nil, err
	}
	return c.body, nil
}

// parseQuery returns the collection name and query document of an
// OP_QUERY, the legacy form of the driver's first hello.
func parseQuery(m message) (coll string, query bson.Raw, err error) {
	if m.opcode() != opQuery || len(m) < 20 {
		return "", nil, errMalformed
	}
	b := m[20:]
	i := indexByte(b, 0)
	if i < 0 || len(b) < i+1+8 {
		return "", nil, errMalformed
	}
	coll = string(b[:i])
	doc, _, err := readDoc(b[i+1+8:])
	return coll, doc, err
}

// replyDocs returns the documents of an OP_REPLY.
func replyDocs(m message) ([]bson.Raw, error) {
	if m.opcode() != opReply || len(m) < 36 {
		return nil, errMalformed
	}
	b := m[36:]
	var out []bson.Raw
	for len(b) > 0 {
		d, rest, err := readDoc(b)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		b = rest
	}
	return out, nil
}

// withReplyDoc returns OP_REPLY m with its one document replaced by doc.
func withReplyDoc(m message, doc []byte) message {
	n := 36 + len(doc)
	out := make(message, n)
	copy(out, m[:36])
	binary.LittleEndian.PutUint32(out[0:], uint32(n))
	binary.LittleEndian.PutUint32(out[32:], 1)
	copy(out[36:], doc)
	return out
}
