//go:build race

package netx

const raceEnabled = true
