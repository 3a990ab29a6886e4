package bench

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestParseSSEReading(t *testing.T) {
	for _, data := range []string{
		`{"id":7,"device_id":3,"project":"bench","seq":42,"device_time":"2026-12-02T13:00:00.5Z","received":"2026-12-02T13:00:01Z","kind":"temperature","value":21.5,"name":"inside","heard":[{"relay":"r-1","received":"2026-12-02T13:00:00.123Z","rssi":-80,"snr":7.5}]}`,
		`{"id":8,"device_id":4,"project":"x\"seq\":1","seq":9,"device_time":"2026-12-02T13:00:00Z","received":"2026-12-02T13:00:01Z","kind":"numeric","value":1,"heard":[]}`,
		`{"id":9,"device_id":5,"project":"p","seq":10,"device_time":"2026-12-02T13:00:00Z","received":"2026-12-02T13:00:01Z","kind":"numeric","value":1,"heard":[{"relay":"a\"b","received":"2026-12-02T13:00:00.9Z","rssi":0,"snr":0}]}`,
		`{"device_id":5,"seq":10,"heard":[{"received":"2026-12-02T13:00:00.9Z"}]}`,
	} {
		var want sseReading
		if err := json.Unmarshal([]byte(data), &want); err != nil {
			t.Fatal(err)
		}
		got, err := parseSSEReading([]byte(data))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Heard) == 0 && len(want.Heard) == 0 {
			got.Heard, want.Heard = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", data, got, want)
		}
	}
	if _, ok := scanSSEReading([]byte(`{"id":7,"device_id":3,"project":"bench","seq":42,"heard":[{"relay":"r-1","received":"2026-12-02T13:00:00.123Z"}]}`)); !ok {
		t.Error("the server's usual event did not take the direct path")
	}
	if _, err := parseSSEReading([]byte(`{"device_id":"x"}`)); err == nil {
		t.Error("a malformed event was accepted")
	}
}
