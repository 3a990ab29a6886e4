package auth

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func TestThrottleDefaults(t *testing.T) {
	c := NewThrottle(ThrottleConfig{}).Config()
	if c.MaxPerAccount != 5 || c.MaxPerSource != 20 || c.Window != 15*time.Minute || c.Lockout != 15*time.Minute || c.MaxEntries != 100_000 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestThrottleAccountLockout(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxPerAccount: 3, MaxPerSource: 100, Window: time.Minute, Lockout: 10 * time.Minute})
	now := t0
	// Failures from different sources all count against the account.
	for i := range 2 {
		if ok, _ := th.Allow("alice@example.com", fmt.Sprintf("192.0.2.%d", i), now); !ok {
			t.Fatalf("locked after %d failures", i)
		}
		th.Failure("alice@example.com", fmt.Sprintf("192.0.2.%d", i), now)
		now = now.Add(time.Second)
	}
	th.Failure("Alice@Example.com ", "192.0.2.9", now) // same account, other spelling
	ok, retry := th.Allow("alice@example.com", "198.51.100.1", now)
	if ok || retry != 10*time.Minute {
		t.Fatalf("after 3 failures: ok=%v retry=%v; want locked for 10m", ok, retry)
	}
	// Other accounts are not affected.
	if ok, _ := th.Allow("bob@example.com", "192.0.2.0", now); !ok {
		t.Fatal("bob locked by alice's failures")
	}
	// The lockout counts down and ends; failures during it do not extend it.
	th.Failure("alice@example.com", "192.0.2.1", now.Add(5*time.Minute))
	if ok, retry := th.Allow("alice@example.com", "", now.Add(9*time.Minute)); ok || retry != time.Minute {
		t.Fatalf("9 min in: ok=%v retry=%v", ok, retry)
	}
	if ok, _ := th.Allow("alice@example.com", "", now.Add(10*time.Minute)); !ok {
		t.Fatal("still locked after the lockout")
	}
	// After the lockout, the count starts afresh.
	now = now.Add(10 * time.Minute)
	th.Failure("alice@example.com", "192.0.2.1", now)
	if ok, _ := th.Allow("alice@example.com", "", now); !ok {
		t.Fatal("one failure after lockout locked again")
	}
}

func TestThrottleWindowExpiry(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxPerAccount: 3, MaxPerSource: 100, Window: time.Minute, Lockout: time.Hour})
	// Two failures a minute apart, forever, never lock: the window forgets.
	now := t0
	for range 10 {
		th.Failure("carol", "", now)
		th.Failure("carol", "", now.Add(time.Second))
		now = now.Add(2 * time.Minute)
		if ok, _ := th.Allow("carol", "", now); !ok {
			t.Fatal("locked by failures spread beyond the window")
		}
	}
}

func TestThrottleSourceLockout(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxPerAccount: 3, MaxPerSource: 5, Window: time.Minute, Lockout: 2 * time.Minute})
	// One source sprays one guess at many accounts: no account reaches its limit, the source does.
	for i := range 5 {
		th.Failure(fmt.Sprintf("user%d", i), "203.0.113.7:51000", t0)
	}
	ok, retry := th.Allow("user99", "203.0.113.7", t0)
	if ok || retry != 2*time.Minute {
		t.Fatalf("source after 5 failures: ok=%v retry=%v", ok, retry)
	}
	if ok, _ := th.Allow("user99", "203.0.113.8", t0); !ok {
		t.Fatal("another source is locked too")
	}
	// A success on an account of its own does not clear the source's lock.
	th.Success("user99", "203.0.113.7")
	if ok, _ := th.Allow("user98", "203.0.113.7", t0.Add(time.Minute)); ok {
		t.Fatal("Success cleared the source lock")
	}
	if ok, _ := th.Allow("user98", "203.0.113.7", t0.Add(2*time.Minute)); !ok {
		t.Fatal("source still locked after the lockout")
	}
	// IPv6 addresses in one /64 are one source.
	for i := range 5 {
		th.Failure(fmt.Sprintf("v6user%d", i), fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1), t0)
	}
	if ok, _ := th.Allow("x", "2001:db8:1:2:ffff::1", t0); ok {
		t.Fatal("an IPv6 /64 spread over many addresses was not locked as one source")
	}
	if ok, _ := th.Allow("x", "2001:db8:1:3::1", t0); !ok {
		t.Fatal("the neighbouring /64 is locked")
	}
}

func TestThrottleSuccessResetsAccount(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxPerAccount: 3, Window: time.Hour})
	th.Failure("dave", "192.0.2.1", t0)
	th.Failure("dave", "192.0.2.1", t0)
	th.Success("dave", "192.0.2.1")
	th.Failure("dave", "192.0.2.1", t0)
	th.Failure("dave", "192.0.2.1", t0)
	if ok, _ := th.Allow("dave", "", t0); !ok {
		t.Fatal("failures before a success still counted")
	}
}

func TestThrottleBoundedMemory(t *testing.T) {
	const max = 500
	th := NewThrottle(ThrottleConfig{MaxPerAccount: 3, MaxPerSource: 1_000_000, Window: time.Hour, Lockout: time.Hour, MaxEntries: max})
	// A locked account, then a flood of distinct accounts and sources within the window.
	for range 3 {
		th.Failure("victim", "192.0.2.1", t0)
	}
	now := t0
	for i := range 10 * max {
		now = now.Add(time.Millisecond)
		long := fmt.Sprintf("%d-%0200d", i, 0) // long names cost no more: keys are hashed
		th.Failure(long, fmt.Sprintf("client-%d", i), now)
		if i%max == 0 {
			if a, s := th.Len(); a > max || s > max {
				t.Fatalf("after %d distinct failures: %d accounts, %d sources remembered; bound is %d", i+1, a, s, max)
			}
		}
	}
	if a, s := th.Len(); a > max || s > max {
		t.Fatalf("%d accounts, %d sources remembered; bound is %d", a, s, max)
	}
	// The flood did not evict the locked account (unlocked entries go first).
	if ok, _ := th.Allow("victim", "", now); ok {
		t.Fatal("a flood of other names unlocked the victim")
	}
	// Once everything has expired, a sweep empties the tables.
	later := now.Add(2 * time.Hour)
	th.Failure("last", "192.0.2.2", later)
	if a, s := th.Len(); a != 1 || s != 1 {
		t.Fatalf("after expiry: %d accounts, %d sources remembered; want 1, 1", a, s)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                  "192.0.2.1",
		"192.0.2.1:8080":             "192.0.2.1",
		"::ffff:192.0.2.1":           "192.0.2.1",
		"2001:db8::1":                "2001:db8::/64",
		"[2001:db8::1]:443":          "2001:db8::/64",
		"2001:db8:0:0:ffff::9":       "2001:db8::/64",
		"[fe80::1%eth0]:22":          "fe80::/64",
		"unix-socket":                "unix-socket",
		" 198.51.100.20 ":            "198.51.100.20",
		"2001:db8:aaaa:bbbb:1:2:3:4": "2001:db8:aaaa:bbbb::/64",
	} {
		if got := SourceKey(in); got != want {
			t.Errorf("SourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}
