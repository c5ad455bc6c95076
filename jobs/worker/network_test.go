package worker_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
)

// TestNetworkPolicyAndRequests reaches a local HTTP server through the
// worker's gateway, and checks that a job can narrow the policy but not
// widen it.
func TestNetworkPolicyAndRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from the host")
	}))
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	port, _ := strconv.Atoi(portStr)

	gw, err := netgate.NewGateway(netgate.Config{Policy: netgate.Policy{
		AllowHosts: []string{"127.0.0.1"}, AllowPorts: []int{port}, AllowLoopback: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	cfg.Network = gw
	startWorker(t, nc, cfg)
	c := newClient(t, nc)

	fetch := fmt.Sprintf("import urllib.request\nresult = urllib.request.urlopen('%s/', timeout=5).read().decode()", srv.URL)
	tests := []struct {
		name    string
		network string
		status  jobs.Status
		code    jobs.RejectCode
		value   string
	}{
		{"worker policy", "", jobs.StatusOK, "", `"hello from the host"`},
		{"narrowed to the same host", `{"allow":["127.0.0.1"],"max_connections":2}`, jobs.StatusOK, "", `"hello from the host"`},
		{"no network asked", `{"allow":[]}`, jobs.StatusError, "", ""},
		{"wider than the policy", `{"allow":["example.com"]}`, jobs.StatusRejected, jobs.CodeNotAllowed, ""},
		{"other port", `{"allow_ports":[1]}`, jobs.StatusRejected, jobs.CodeNotAllowed, ""},
		{"unknown field", `{"allow":[],"bogus":1}`, jobs.StatusRejected, jobs.CodeMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := &jobs.Job{Code: fetch}
			if tt.network != "" {
				job.Network = json.RawMessage(tt.network)
			}
			res := runJob(t, c, job, jobs.Handlers{})
			if res.Status != tt.status || res.Code != tt.code {
				t.Fatalf("%s/%s (%s), error %+v", res.Status, res.Code, res.Reason, res.Error)
			}
			if tt.value != "" && string(res.Result) != tt.value {
				t.Errorf("result %s", res.Result)
			}
		})
	}

	// Without a gateway there is no network, and asking for some is refused.
	nc2 := connect(t, startServer(t))
	startWorker(t, nc2, testConfig("offline"))
	c2 := newClient(t, nc2)
	res := runJob(t, c2, &jobs.Job{Code: fetch, Network: json.RawMessage(`{"allow":["127.0.0.1"]}`)}, jobs.Handlers{})
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeNotAllowed {
		t.Fatalf("offline worker: %s/%s", res.Status, res.Code)
	}
	if res := runJob(t, c2, &jobs.Job{Code: fetch}, jobs.Handlers{}); res.Status != jobs.StatusError {
		t.Fatalf("offline worker ran a fetch: %s", res.Status)
	}
}
