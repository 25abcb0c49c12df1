//go:build !race

package hostrelay

const raceEnabled = false
