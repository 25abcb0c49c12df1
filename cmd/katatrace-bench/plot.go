package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"slices"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

var pathColors = map[string]color.RGBA{
	"baseline":  {0x44, 0x44, 0x44, 0xff},
	"socat":     {0xd6, 0x27, 0x28, 0xff},
	"katatrace": {0x1f, 0x77, 0xb4, 0xff},
	"limit":     {0x2c, 0xa0, 0x2c, 0xff},
}

// drawPlot draws, per workload, delivered datagrams/s against offered load,
// one line per path; the saturation point (offered max) is drawn at the
// sender's achieved rate. With several senders, the first one's.
func drawPlot(file string, results []Result) error {
	if len(results) > 0 {
		first := results[0].Sender
		results = slices.DeleteFunc(slices.Clone(results), func(r Result) bool { return r.Sender != first })
	}
	workloads := uniq(results, func(r Result) string { return r.Workload })
	const pw, ph, margin = 520, 300, 60
	img := image.NewRGBA(image.Rect(0, 0, pw+2*margin, len(workloads)*(ph+margin)+margin))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	for i, wl := range workloads {
		x0, y0 := margin, margin+i*(ph+margin)
		var maxX, maxY float64
		for _, r := range results {
			if r.Workload == wl {
				maxX = max(maxX, r.SentRate)
				maxY = max(maxY, r.Rate)
			}
		}
		maxX, maxY = max(maxX, 1)*1.05, max(maxY, 1)*1.1
		grey := color.RGBA{0xbb, 0xbb, 0xbb, 0xff}
		line(img, x0, y0+ph, x0+pw, y0+ph, grey)
		line(img, x0, y0, x0, y0+ph, grey)
		label(img, x0, y0-8, fmt.Sprintf("workload %s: delivered datagrams/s (y, up to %.0f) vs offered (x, up to %.0f)", wl, maxY, maxX), color.Black)
		legend := x0 + 10
		for _, path := range uniq(results, func(r Result) string { return r.Path }) {
			col := pathColors[path]
			px, py := -1, -1
			for _, r := range results {
				if r.Workload != wl || r.Path != path {
					continue
				}
				x := x0 + int(r.SentRate/maxX*pw)
				y := y0 + ph - int(r.Rate/maxY*ph)
				if px >= 0 {
					line(img, px, py, x, y, col)
				}
				dot(img, x, y, col)
				px, py = x, y
			}
			label(img, legend, y0+16, path, col)
			legend += 90
		}
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		img.Set(x0+(x1-x0)*i/n, y0+(y1-y0)*i/n, c)
		img.Set(x0+(x1-x0)*i/n, y0+(y1-y0)*i/n+1, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.Color) {
	for dx := -3; dx <= 3; dx++ {
		for dy := -3; dy <= 3; dy++ {
			img.Set(x+dx, y+dy, c)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
