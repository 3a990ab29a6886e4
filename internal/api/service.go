package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// maxServiceLifetime bounds a service account token's lifetime.
const maxServiceLifetime = 366 * 24 * time.Hour

type serviceJSON struct {
	ID       int64     `json:"id"`
	Project  string    `json:"project"`
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	Revoked  time.Time `json:"revoked,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
	MayWrite bool      `json:"may_write"`
	// Token is set only in the answer that creates the account.
	Token string `json:"token,omitempty"`
}

func newServiceJSON(s store.ServiceAccount) serviceJSON {
	return serviceJSON{ID: s.ID, Project: s.ProjectID, Name: s.Name, Role: s.Role.String(), Created: s.Created.UTC(),
		Expires: s.Expires.UTC(), Revoked: s.Revoked.UTC(), LastUsed: s.LastUsed.UTC(), MayWrite: s.MayWrite}
}

func (a *API) listServiceAccounts(w http.ResponseWriter, r *http.Request) error {
	sas, err := a.store.ServiceAccounts(r.Context(), projectOf(r).ID)
	if err != nil {
		return err
	}
	out := make([]serviceJSON, 0, len(sas))
	for _, s := range sas {
		out = append(out, newServiceJSON(s))
	}
	writeJSON(w, http.StatusOK, struct {
		ServiceAccounts []serviceJSON `json:"service_accounts"`
	}{out})
	return nil
}

type serviceRequest struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// createServiceAccount makes a named, expiring token for a machine, shown
// once; only its hash is kept. It cannot make changes until an
// organisation admin allows it (allowServiceWrite).
func (a *API) createServiceAccount(w http.ResponseWriter, r *http.Request) error {
	var req serviceRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	role, ok := store.ParseRole(req.Role)
	switch {
	case req.Name == "" || len(req.Name) > maxField:
		return invalid("name is required")
	case !ok:
		return invalid("role must be owner, admin, developer or viewer")
	case req.Expires.IsZero() || !req.Expires.After(a.now()) || req.Expires.Sub(a.now()) > maxServiceLifetime:
		return invalid(fmt.Sprintf("expires must be a time in the next %d days", int(maxServiceLifetime.Hours()/24)))
	}
	pa := projectOf(r)
	if role > pa.Role {
		return forbidden(fmt.Sprintf("you cannot give a role above your own (%s)", pa.Role))
	}
	token, hash, err := auth.NewToken(servicePrefix)
	if err != nil {
		return err
	}
	sa := store.ServiceAccount{ProjectID: pa.ID, Name: req.Name, Role: role, Hash: hash, Created: a.now(),
		Expires: req.Expires.UTC().Truncate(time.Millisecond)}
	if sa.ID, err = a.store.CreateServiceAccount(r.Context(), sa); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), pa.OrgID, "service.create", serviceTarget(sa), role.String()); err != nil {
		return err
	}
	out := newServiceJSON(sa)
	out.Token = token
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func serviceTarget(s store.ServiceAccount) string {
	return "project:" + s.ProjectID + "/service:" + itoa64(s.ID)
}

// projectService is the {sa} of the route's project.
func (a *API) projectService(r *http.Request, project string) (store.ServiceAccount, error) {
	id, err := parseID(r.PathValue("sa"))
	if err != nil {
		return store.ServiceAccount{}, invalid("service account id must be a positive integer")
	}
	sa, err := a.store.ServiceAccount(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && sa.ProjectID != project) {
		return sa, notFound("no such service account")
	}
	return sa, err
}

func (a *API) revokeServiceAccount(w http.ResponseWriter, r *http.Request) error {
	pa := projectOf(r)
	sa, err := a.projectService(r, pa.ID)
	if err != nil {
		return err
	}
	if err := a.store.RevokeServiceAccount(r.Context(), sa.ID, a.now()); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), pa.OrgID, "service.revoke", serviceTarget(sa), ""); err != nil {
		return err
	}
	sa, err = a.store.ServiceAccount(r.Context(), sa.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newServiceJSON(sa))
	return nil
}

type allowWriteRequest struct {
	Allow *bool `json:"allow"`
}

// allowServiceWrite is the organisation's explicit permission for a
// service account to make changes without a person's TOTP.
func (a *API) allowServiceWrite(w http.ResponseWriter, r *http.Request) error {
	var req allowWriteRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Allow == nil {
		return invalid("allow (true or false) is required")
	}
	id, err := parseID(r.PathValue("sa"))
	if err != nil {
		return invalid("service account id must be a positive integer")
	}
	org := r.PathValue("org")
	sa, err := a.store.ServiceAccount(r.Context(), id)
	if err == nil {
		var po string
		if po, err = a.store.ProjectOrg(r.Context(), sa.ProjectID); err == nil && po != org {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return lookupErr(err, "no such service account in this organisation")
	}
	if err := a.store.SetServiceAccountWrite(r.Context(), sa.ID, *req.Allow); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), org, "service.write", serviceTarget(sa), fmt.Sprint(*req.Allow)); err != nil {
		return err
	}
	sa.MayWrite = *req.Allow
	writeJSON(w, http.StatusOK, newServiceJSON(sa))
	return nil
}
