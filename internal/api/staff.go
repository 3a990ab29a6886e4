package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// maxGrant bounds a staff grant: support access is for a while, not for
// ever.
const maxGrant = 30 * 24 * time.Hour

type staffGrantJSON struct {
	ID        int64     `json:"id"`
	Project   string    `json:"project"`
	Staff     int64     `json:"staff"`
	Access    string    `json:"access"` // read-only, read-write
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	Revoked   time.Time `json:"revoked,omitzero"`
	GrantedBy string    `json:"granted_by"`
	Active    bool      `json:"active"`
}

func (a *API) newStaffGrantJSON(g store.StaffGrant) staffGrantJSON {
	access := store.RemoteReadOnly
	if g.Write {
		access = store.RemoteReadWrite
	}
	return staffGrantJSON{ID: g.ID, Project: g.ProjectID, Staff: g.StaffID, Access: access, Created: g.Created.UTC(),
		Expires: g.Expires.UTC(), Revoked: g.Revoked.UTC(), GrantedBy: g.GrantedBy,
		Active: g.Revoked.IsZero() && a.now().Before(g.Expires)}
}

func (a *API) listStaffGrants(w http.ResponseWriter, r *http.Request) error {
	gs, err := a.store.StaffGrants(r.Context(), r.PathValue("org"))
	if err != nil {
		return err
	}
	out := make([]staffGrantJSON, 0, len(gs))
	for _, g := range gs {
		out = append(out, a.newStaffGrantJSON(g))
	}
	writeJSON(w, http.StatusOK, struct {
		Grants []staffGrantJSON `json:"grants"`
	}{out})
	return nil
}

type staffGrantRequest struct {
	StaffEmail string    `json:"staff_email"`
	Project    string    `json:"project"`
	Access     string    `json:"access"`
	Expires    time.Time `json:"expires"`
}

// grantStaff gives a named staff member support access to one project of
// the organisation until Expires (at most maxGrant ahead).
func (a *API) grantStaff(w http.ResponseWriter, r *http.Request) error {
	var req staffGrantRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	now := a.now()
	switch {
	case !validEmail(req.StaffEmail) || req.Project == "":
		return invalid("staff_email and project are required")
	case req.Access != store.RemoteReadOnly && req.Access != store.RemoteReadWrite:
		return invalid("access must be read-only or read-write")
	case !req.Expires.After(now) || req.Expires.Sub(now) > maxGrant:
		return invalid(fmt.Sprintf("expires must be a time in the next %d days", int(maxGrant.Hours()/24)))
	}
	org := r.PathValue("org")
	staff, err := a.store.UserByEmail(r.Context(), req.StaffEmail)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !staff.Staff) {
		return notFound("no such staff member")
	}
	if err != nil {
		return err
	}
	g := store.StaffGrant{OrgID: org, ProjectID: req.Project, StaffID: staff.ID, Write: req.Access == store.RemoteReadWrite,
		Created: now, Expires: req.Expires.UTC().Truncate(time.Millisecond), GrantedBy: callerOf(r).actor()}
	if g.ID, err = a.store.CreateStaffGrant(r.Context(), g); err != nil {
		return lookupErr(err, "no such project in this organisation")
	}
	if err := a.record(r.Context(), callerOf(r), org, "staff.grant", fmt.Sprintf("project:%s/staff:%d", g.ProjectID, staff.ID),
		fmt.Sprintf("%s until %s", req.Access, g.Expires.Format(time.RFC3339))); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, a.newStaffGrantJSON(g))
	return nil
}

func (a *API) revokeStaffGrant(w http.ResponseWriter, r *http.Request) error {
	id, err := parseID(r.PathValue("grant"))
	if err != nil {
		return invalid("grant id must be a positive integer")
	}
	org := r.PathValue("org")
	if err := a.store.RevokeStaffGrant(r.Context(), org, id, a.now()); err != nil {
		return lookupErr(err, "no such grant")
	}
	if err := a.record(r.Context(), callerOf(r), org, "staff.revoke", fmt.Sprintf("grant:%d", id), ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
