package roles

import (
	"slices"
	"strings"
	"testing"
)

func TestRegistrySortedAndUnique(t *testing.T) {
	if !slices.IsSortedFunc(registry, func(a, b Role) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("roles not sorted by name")
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "registered twice") {
			t.Fatalf("a second role named %s: recover() = %v, want a panic", registry[0].Name, r)
		}
	}()
	register(Role{Name: registry[0].Name})
}
