package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestSharedServersAnswer(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)

	c, err := beanstalk.Dial("tcp", b.Beanstalk.Addr())
	require.NoError(t, err)
	defer c.Close()
	id, err := beanstalk.NewTube(c, b.Tube).Put([]byte("x"), 0, 0, time.Minute)
	require.NoError(t, err)
	require.NotZero(t, id)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	coll := b.Mongo.Client().Database(b.DB).Collection("c")
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	require.NoError(t, err)
	n, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestOwnBeanstalkdRestartsWithBinlog(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{BinlogDir: t.TempDir(), FsyncMS: 0})
	c, err := beanstalk.Dial("tcp", bs.Addr())
	require.NoError(t, err)
	id, err := c.Put([]byte("keep"), 0, 0, time.Minute)
	require.NoError(t, err)
	c.Close()

	bs.Kill()
	require.NoError(t, bs.Restart())

	c, err = beanstalk.Dial("tcp", bs.Addr())
	require.NoError(t, err)
	defer c.Close()
	body, err := c.Peek(id)
	require.NoError(t, err)
	require.Equal(t, "keep", string(body))
}
