// A cilium-agent look-alike: the same module path and the same method the
// tracing-basics post's section 2.5 traces, github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate,
// called a few times a second from an event queue goroutine.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/cilium/cilium/pkg/endpoint"
	"github.com/cilium/cilium/pkg/eventqueue"
)

func main() {
	ep := &endpoint.Endpoint{ID: 1337}
	q := eventqueue.New()
	go q.Run()
	fmt.Fprintf(os.Stderr, "cilium-agent look-alike: endpoint %d, pid %d\n", ep.ID, os.Getpid())
	for {
		q.Enqueue(func() { ep.Regenerate("periodic") })
		time.Sleep(200 * time.Millisecond)
	}
}
