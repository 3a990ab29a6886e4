package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the report for people: the machine, then each
// scenario's figures with reference, ratio and target, then the checks.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "signet bench — %s, %d cores (GOMAXPROCS %d), %s, commit %s\n", r.Machine.CPU, r.Machine.Cores,
		r.Machine.GOMAXPROCS, r.Machine.GoVersion, shortCommit(r.Commit))
	fmt.Fprintf(w, "started %s, took %v%s\n", r.Started.Format(time.RFC3339), r.Elapsed.Round(time.Second),
		map[bool]string{true: " — SMOKE MODE: correctness only, figures mean nothing"}[r.Smoke])
	var took []string
	for _, s := range r.Scenarios {
		took = append(took, fmt.Sprintf("%s %v", s.Name, s.Elapsed.Round(100*time.Millisecond)))
	}
	if len(took) > 0 {
		fmt.Fprintf(w, "scenarios: %s\n", strings.Join(took, ", "))
	}
	scen := ""
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range r.Figures {
		if f.Scenario != scen {
			scen = f.Scenario
			fmt.Fprintf(tw, "\n%s\t\t\t\t\t\n", strings.ToUpper(scen))
			fmt.Fprintf(tw, "  figure\tvalue\tunit\tvs reference\ttarget\n")
		}
		vs := ""
		if f.Reference != "" {
			vs = fmtRatio(f.Ratio) + "× " + f.Reference
		}
		target := f.Target
		if f.Met != nil {
			target += map[bool]string{true: "  MET", false: "  MISSED"}[*f.Met]
		} else if target != "" && r.Smoke {
			target += "  (not judged)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", f.Name, fmtValue(f.Value), f.Unit, vs, target)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(w, "\nCHECKS\n")
		for _, c := range r.Checks {
			fmt.Fprintf(w, "  %-4s %s / %s: %s\n", map[bool]string{true: "ok", false: "FAIL"}[c.OK], c.Scenario, c.Name, c.Detail)
		}
	}
	notes := r.Notes
	for _, f := range r.Figures {
		if f.Note != "" {
			notes = append(notes, fmt.Sprintf("%s / %s: %s", f.Scenario, f.Name, f.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nNOTES\n")
		for _, n := range notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "\nFAILED %s\n", f)
	}
	return nil
}

func shortCommit(c string) string {
	rev, dirty, _ := strings.Cut(c, "+")
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty != "" {
		rev += "+" + dirty
	}
	return rev
}

// fmtValue prints a figure with a sensible number of digits.
func fmtValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return groupThousands(strconv.FormatFloat(v, 'f', 0, 64))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtRatio writes a ratio to three significant digits (whole numbers from
// 100 on), so that one a hair below its target (0.595 of 0.6) does not read
// as the target itself beside MISSED.
func fmtRatio(r float64) string {
	if r >= 100 {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'g', 3, 64)
}
