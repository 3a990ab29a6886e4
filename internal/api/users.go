package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// invitationTTL is how long an invitation can be used.
const invitationTTL = 7 * 24 * time.Hour

// idPattern is what organisation and project ids look like.
var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

type orgRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type orgJSON struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// createOrg creates a customer organisation (the installation's staff or
// operator); its first administrator is invited next.
func (a *API) createOrg(w http.ResponseWriter, r *http.Request) error {
	var req orgRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if !idPattern.MatchString(req.ID) || len(req.Name) > maxField {
		return invalid("id must be 1 to 63 lower-case letters, digits and dashes")
	}
	o := store.Org{ID: req.ID, Name: cmpOr(req.Name, req.ID), Created: a.now().Truncate(time.Millisecond)}
	if err := a.store.CreateOrg(r.Context(), o); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return conflict("an organisation with this id exists")
		}
		return err
	}
	if err := a.record(r.Context(), callerOf(r), o.ID, "org.create", "org:"+o.ID, ""); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, orgJSON{ID: o.ID, Name: o.Name, Created: o.Created.UTC()})
	return nil
}

type projectRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// createProject creates a project in the organisation.
func (a *API) createProject(w http.ResponseWriter, r *http.Request) error {
	var req projectRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if !idPattern.MatchString(req.ID) || len(req.Name) > maxField {
		return invalid("id must be 1 to 63 lower-case letters, digits and dashes")
	}
	org := r.PathValue("org")
	p := store.Project{ID: req.ID, Name: cmpOr(req.Name, req.ID), Created: a.now().Truncate(time.Millisecond)}
	if err := a.store.CreateProjectIn(r.Context(), org, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return conflict("a project with this id exists")
		}
		return err
	}
	if err := a.record(r.Context(), callerOf(r), org, "project.create", "project:"+p.ID, ""); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, newProjectAccessJSON(store.ProjectAccess{Project: p, OrgID: org, Role: store.RoleOwner}))
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request) error {
	us, err := a.store.OrgUsers(r.Context(), r.PathValue("org"))
	if err != nil {
		return err
	}
	out := make([]userJSON, 0, len(us))
	for _, u := range us {
		out = append(out, newUserJSON(u))
	}
	writeJSON(w, http.StatusOK, struct {
		Users []userJSON `json:"users"`
	}{out})
	return nil
}

type inviteRequest struct {
	Email    string `json:"email"`
	Project  string `json:"project,omitempty"`
	Role     string `json:"role,omitempty"`
	OrgAdmin bool   `json:"org_admin,omitempty"`
}

type invitationJSON struct {
	// Invitation is shown once; give it to the person, who signs up with
	// it (POST /api/v1/signup).
	Invitation string    `json:"invitation"`
	Email      string    `json:"email"`
	Expires    time.Time `json:"expires"`
}

func validEmail(s string) bool {
	if len(s) > maxField || s == "" {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == ""
}

// invite makes an invitation into the organisation, optionally with a role
// in one of its projects.
func (a *API) invite(w http.ResponseWriter, r *http.Request) error {
	var req inviteRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if !validEmail(req.Email) {
		return invalid("email must be an email address")
	}
	org := r.PathValue("org")
	inv := store.Invitation{OrgID: org, Email: strings.ToLower(req.Email), OrgAdmin: req.OrgAdmin,
		Expires: a.now().Add(invitationTTL), CreatedBy: callerOf(r).actor(), Created: a.now()}
	if req.Project != "" || req.Role != "" {
		role, ok := store.ParseRole(req.Role)
		if !ok || req.Project == "" {
			return invalid("project and role (owner, admin, developer or viewer) go together")
		}
		inv.ProjectID, inv.Role = req.Project, role
	}
	token, hash, err := auth.NewToken(invitationPrefix)
	if err != nil {
		return err
	}
	inv.Hash = hash
	if err := a.store.CreateInvitation(r.Context(), inv); err != nil {
		return lookupErr(err, "no such project in this organisation")
	}
	if err := a.record(r.Context(), callerOf(r), org, "user.invite", "email:"+inv.Email, ""); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, invitationJSON{Invitation: token, Email: inv.Email, Expires: inv.Expires.UTC()})
	return nil
}

// orgUser is the {user} of an organisation route: a user of another
// organisation is not found.
func (a *API) orgUser(r *http.Request) (store.User, error) {
	id, err := parseID(r.PathValue("user"))
	if err != nil {
		return store.User{}, invalid("user id must be a positive integer")
	}
	u, err := a.store.User(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.OrgID != r.PathValue("org")) {
		return u, notFound("no such user in this organisation")
	}
	return u, err
}

func (a *API) approveUser(w http.ResponseWriter, r *http.Request) error {
	return a.setUserStatus(w, r, store.UserActive, "user.approve")
}

func (a *API) disableUser(w http.ResponseWriter, r *http.Request) error {
	return a.setUserStatus(w, r, store.UserDisabled, "user.disable")
}

func (a *API) setUserStatus(w http.ResponseWriter, r *http.Request, st store.UserStatus, action string) error {
	u, err := a.orgUser(r)
	if err != nil {
		return err
	}
	if c := callerOf(r); c.user != nil && c.user.ID == u.ID {
		return invalid("you cannot change your own status")
	}
	if err := a.store.SetUserStatus(r.Context(), u.ID, st); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), u.OrgID, action, userTarget(u.ID), ""); err != nil {
		return err
	}
	u.Status = st
	writeJSON(w, http.StatusOK, newUserJSON(u))
	return nil
}

type memberJSON struct {
	User int64  `json:"user"`
	Role string `json:"role"`
}

func (a *API) listMembers(w http.ResponseWriter, r *http.Request) error {
	ms, err := a.store.Members(r.Context(), projectOf(r).ID)
	if err != nil {
		return err
	}
	out := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberJSON{User: m.UserID, Role: m.Role.String()})
	}
	writeJSON(w, http.StatusOK, struct {
		Members []memberJSON `json:"members"`
	}{out})
	return nil
}

type memberRequest struct {
	Role string `json:"role"`
}

// setMember gives a user of the project's organisation a role in it. No one
// gives a role above their own.
func (a *API) setMember(w http.ResponseWriter, r *http.Request) error {
	var req memberRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	role, ok := store.ParseRole(req.Role)
	if !ok {
		return invalid("role must be owner, admin, developer or viewer")
	}
	pa := projectOf(r)
	if role > pa.Role {
		return forbidden(fmt.Sprintf("you cannot give a role above your own (%s)", pa.Role))
	}
	uid, err := parseID(r.PathValue("user"))
	if err != nil {
		return invalid("user id must be a positive integer")
	}
	if err := a.store.SetMember(r.Context(), store.Member{UserID: uid, ProjectID: pa.ID, Role: role}); err != nil {
		return lookupErr(err, "no such user in this organisation")
	}
	if err := a.record(r.Context(), callerOf(r), pa.OrgID, "member.set", "project:"+pa.ID+"/"+userTarget(uid), role.String()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, memberJSON{User: uid, Role: role.String()})
	return nil
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request) error {
	pa := projectOf(r)
	uid, err := parseID(r.PathValue("user"))
	if err != nil {
		return invalid("user id must be a positive integer")
	}
	if err := a.store.RemoveMember(r.Context(), uid, pa.ID); err != nil {
		return lookupErr(err, "no such member")
	}
	if err := a.record(r.Context(), callerOf(r), pa.OrgID, "member.remove", "project:"+pa.ID+"/"+userTarget(uid), ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
