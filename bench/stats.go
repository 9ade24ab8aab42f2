package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// table collects figures by name, one value per run, and prints min,
// median and max of each.
type table struct {
	names []string
	unit  map[string]string
	vals  map[string][]float64
	notes []string
}

func newTable() *table {
	return &table{unit: map[string]string{}, vals: map[string][]float64{}}
}

// add records one run's value of figure name.
func (t *table) add(name, unit string, v float64) {
	if _, ok := t.vals[name]; !ok {
		t.names = append(t.names, name)
		t.unit[name] = unit
	}
	t.vals[name] = append(t.vals[name], v)
}

// addDur records a duration in milliseconds.
func (t *table) addDur(name string, d time.Duration) { t.add(name, "ms", ms(d)) }

// note adds a line printed under the table.
func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print() {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "figure\tunit\truns\tmin\tmedian\tmax\t")
	for _, n := range t.names {
		v := slices.Sorted(slices.Values(t.vals[n]))
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t\n", n, t.unit[n], len(v), num(v[0]), num(median(v)), num(v[len(v)-1]))
	}
	_ = w.Flush()
	for _, n := range t.notes {
		fmt.Println("  " + n)
	}
}

// median of sorted values.
func median(v []float64) float64 {
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func num(f float64) string {
	switch {
	case f == float64(int64(f)) && f < 1e9:
		return fmt.Sprintf("%d", int64(f))
	case f < 10:
		return fmt.Sprintf("%.3f", f)
	case f < 1000:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.0f", f)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// histogram renders counts per bucket as a compact line: "0s:12 1s:340 …".
func histogram(counts []int, bucket time.Duration) string {
	var b strings.Builder
	for i, c := range counts {
		if c == 0 {
			continue
		}
		fmt.Fprintf(&b, " %s:%d", time.Duration(i)*bucket, c)
	}
	return strings.TrimSpace(b.String())
}
