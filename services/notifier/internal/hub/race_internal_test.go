//go:build race

package hub

// raceEnabled: the race detector grows stacks and the heap, so memory
// budgets are doubled under it.
const raceEnabled = true
