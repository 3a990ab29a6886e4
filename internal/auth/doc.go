// Package auth holds Signet's authentication building blocks: argon2id password hashes and the password
// policy, the login throttle, TOTP (RFC 6238) with recovery codes, random tokens stored as hashes, and
// OpenID Connect single sign-on. It knows nothing of users, organisations or HTTP routes; the access
// layer composes these pieces (docs/access.md, "Authentication building blocks").
package auth
