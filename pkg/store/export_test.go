package store

// JournalHints is how many seconds' next free stream slot s remembers.
func JournalHints(s *Results) int {
	s.journal.mu.Lock()
	defer s.journal.mu.Unlock()
	return len(s.journal.next)
}

// MaxJournalHints is the most it remembers.
const MaxJournalHints = maxHints
