package api

import (
	"net/http"
	"testing"
)

func TestRevokeAndEnableDevice(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	path := "/api/v1/devices/" + itoa(f.dev1)
	for _, tc := range []struct {
		action string
		want   bool
	}{{"revoke", false}, {"enable", true}, {"revoke", false}} {
		resp := f.request("POST", path+"/"+tc.action, "Bearer "+f.token, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", tc.action, resp.StatusCode)
		}
		d, err := f.store.Device(t.Context(), f.dev1)
		if err != nil || d.Enabled != tc.want {
			t.Fatalf("after %s the device is enabled=%v, want %v (%v)", tc.action, d.Enabled, tc.want, err)
		}
	}
	// A GET cannot change anything, and an unknown device is 404.
	status, body := f.do("GET", path+"/enable", "Bearer "+f.token)
	expectError(t, "GET", status, body, http.StatusMethodNotAllowed, "method_not_allowed")
	status, body = f.do("POST", "/api/v1/devices/999999/revoke", "Bearer "+f.token)
	expectError(t, "unknown", status, body, http.StatusNotFound, "not_found")
}
