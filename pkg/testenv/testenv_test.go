package testenv_test

import (
	"context"
	"net/http"
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

func TestOwnMongoRestartsOnItsPortWithItsData(t *testing.T) {
	t.Parallel()
	m := testenv.StartMongo(t)
	require.NotContains(t, m.Addr, ":0", "devmongo reported the port it chose")
	ctx := testenv.Context(t, time.Minute)
	coll := m.Client().Database("d").Collection("c")
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	require.NoError(t, err)

	addr := m.Addr
	m.Stop()
	require.NoError(t, m.Restart())
	require.Equal(t, addr, m.Addr)
	n, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestStackServesOnPortsTestenvBound(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: 2})
	urls := []string{s.ManagerURL, s.NotifierURL, s.Workers[0].URL, s.Workers[1].URL}
	seen := map[string]bool{}
	for _, u := range urls {
		require.Regexp(t, `^http://127\.0\.0\.1:[1-9][0-9]*$`, u)
		require.False(t, seen[u], "%s twice", u)
		seen[u] = true
		resp, err := http.Get(u + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, u)
	}

	// A stopped service refuses connections (testenv kept no copy of its
	// listener) and a restarted one serves on the same port.
	s.Manager.Stop()
	require.Equal(t, 0, s.Manager.ExitCode(), s.Manager.Logs())
	_, err := http.Get(s.ManagerURL + "/healthz")
	require.ErrorContains(t, err, "connection refused")
	require.NoError(t, s.Manager.Restart())
	resp, err := http.Get(s.ManagerURL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
