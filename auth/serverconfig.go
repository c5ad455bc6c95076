package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// DefaultAccount is the NATS account eryx's users live in.
const DefaultAccount = "ERYX"

// AuthUser is the static user eryx-auth connects as.
const AuthUser = "eryx-auth"

// StaticUser is a user of the server configuration with fixed
// permissions: the static alternative to the callout.
type StaticUser struct {
	User string
	// Password is quoted, unless it is a $VARIABLE reference.
	Password    string
	Permissions jwt.Permissions
}

// ServerConfig renders the accounts and authorization part of a
// nats-server configuration for eryx: one JetStream-enabled account
// holding every user, and either an auth callout (Issuer set: eryx-auth,
// connecting as AuthUser, issues every other user) or only static users.
type ServerConfig struct {
	Prefix  string
	Account string // DefaultAccount if empty
	// Issuer is the callout's public account nkey; empty: no callout.
	Issuer string
	// AuthPassword is eryx-auth's password (callout only).
	AuthPassword string
	// Users are static users (besides eryx-auth).
	Users []StaticUser
}

func quoteConf(v string) string {
	if strings.HasPrefix(v, "$") {
		return v
	}
	return fmt.Sprintf("%q", v)
}

// Render returns the configuration text.
func (c ServerConfig) Render() (string, error) {
	acc := c.Account
	if acc == "" {
		acc = DefaultAccount
	}
	users := c.Users
	if c.Issuer != "" {
		if !nkeys.IsValidPublicAccountKey(c.Issuer) {
			return "", fmt.Errorf("%w issuer %q: want a public account nkey", ErrInvalid, c.Issuer)
		}
		perms, err := AuthServicePermissions(c.Prefix)
		if err != nil {
			return "", err
		}
		users = append([]StaticUser{{User: AuthUser, Password: c.AuthPassword, Permissions: perms}}, users...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "accounts {\n  %s {\n    jetstream: enabled\n    users: [\n", acc)
	for _, u := range users {
		fmt.Fprintf(&b, "      {\n        user: %s\n        password: %s\n", quoteConf(u.User), quoteConf(u.Password))
		b.WriteString(RenderConfig(u.Permissions, "        "))
		b.WriteString("      }\n")
	}
	b.WriteString("    ]\n  }\n}\n")
	if c.Issuer != "" {
		fmt.Fprintf(&b, "authorization {\n  auth_callout {\n    issuer: %q\n    account: %q\n    auth_users: [%q]\n  }\n}\n",
			c.Issuer, acc, AuthUser)
	}
	return b.String(), nil
}
