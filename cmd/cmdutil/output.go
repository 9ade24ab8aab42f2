package cmdutil

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/muesli/termenv"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Styles are named by meaning, never by colour, and rendered only when the
// stream is a coloured terminal. Meaning never rests on colour alone: every
// styled word also says what it means (ok, offline, drift …).
type Styles struct {
	OK, Warn, Err, Faint, Bold lipgloss.Style
}

func NewStyles(w io.Writer, color bool) Styles {
	r := lipgloss.NewRenderer(w)
	if !color {
		r.SetColorProfile(termenv.Ascii)
	}
	return Styles{
		OK:    r.NewStyle().Foreground(lipgloss.Color("2")),
		Warn:  r.NewStyle().Foreground(lipgloss.Color("3")),
		Err:   r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		Faint: r.NewStyle().Faint(true),
		Bold:  r.NewStyle().Bold(true),
	}
}

// OutStyles are the Styles for results on Out.
func (s *IOStreams) OutStyles() Styles { return NewStyles(s.Out, s.Color()) }

// ErrStyles are the Styles for progress on ErrOut.
func (s *IOStreams) ErrStyles() Styles {
	return NewStyles(s.ErrOut, s.ErrTTY && !s.NoColor)
}

// PrintTable writes rows under header: a lipgloss table on a terminal, plain
// tab-aligned columns when piped.
func PrintTable(io *IOStreams, header []string, rows [][]string) error {
	if io.OutTTY {
		st := io.OutStyles()
		t := table.New().
			Border(lipgloss.NormalBorder()).
			BorderStyle(st.Faint).
			Headers(header...).
			Rows(rows...).
			StyleFunc(func(row, _ int) lipgloss.Style {
				if row == table.HeaderRow {
					return st.Bold.Padding(0, 1)
				}
				return lipgloss.NewStyle().Padding(0, 1)
			})
		_, err := fmt.Fprintln(io.Out, t.Render())
		return err
	}
	tw := tabwriter.NewWriter(io.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// WriteJSON writes v as indented JSON followed by a newline.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteJSONLine writes v as one compact JSON line (for streams of records).
func WriteJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// FormatTime is "12s ago" on a terminal and RFC 3339 when piped.
func FormatTime(io *IOStreams, t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if !io.OutTTY {
		return t.UTC().Format(time.RFC3339)
	}
	return RelTime(now.Sub(t))
}

// RelTime renders an age as "12s ago", "5m ago", "3h ago", "2d ago".
func RelTime(d time.Duration) string {
	if d < 0 {
		return "just now"
	}
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// NewLogger builds the operator-side slog logger on w: text on a terminal or
// when asked, JSON otherwise.
func NewLogger(w io.Writer, level, format string, tty bool) *slog.Logger {
	lvl, err := core.ParseLogLevel(level)
	if err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
