package testenv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ForgeObjectSize rewrites the info of an object in a JetStream object
// store so that it claims size bytes, whatever its chunks hold: what any
// client allowed to write the bucket can do. Readers that trust the info
// are fooled; the chunks are untouched.
func ForgeObjectSize(t testing.TB, js jetstream.JetStream, bucket, name string, size uint64) {
	t.Helper()
	forgeInfo(t, js, bucket, name, func(info *jetstream.ObjectInfo) { info.Size = size })
}

// ForgeObjectDigest rewrites an object's info to claim digest (as
// "SHA-256=<base64url>") while its chunks stay what they are.
func ForgeObjectDigest(t testing.TB, js jetstream.JetStream, bucket, name, digest string) {
	t.Helper()
	forgeInfo(t, js, bucket, name, func(info *jetstream.ObjectInfo) { info.Digest = digest })
}

func forgeInfo(t testing.TB, js jetstream.JetStream, bucket, name string, edit func(*jetstream.ObjectInfo)) {
	t.Helper()
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	edit(info)
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Data = data
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
}
