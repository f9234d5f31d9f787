package eventqueue

// EventQueue runs queued functions one at a time on its own goroutine.
type EventQueue struct {
	events chan func()
}

// New returns an empty queue.
func New() *EventQueue { return &EventQueue{events: make(chan func(), 16)} }

// Enqueue adds fn to the queue.
func (q *EventQueue) Enqueue(fn func()) { q.events <- fn }

// Run processes events until the program exits.
//
//go:noinline
func (q *EventQueue) Run() {
	for fn := range q.events {
		q.run(fn)
	}
}

//go:noinline
func (q *EventQueue) run(fn func()) { fn() }
