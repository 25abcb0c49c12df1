// Package lograte limits how often a repeated event is logged, counting
// what it held back, so that a flood of drops or bad peers cannot flood
// the log.
package lograte
