package netgate

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// handshake runs a TLS client handshake over cn's TCP connection and
// returns the TLS connection; the caller switches cn's I/O to it.
// Verification uses the gateway's roots (system plus the operator's extra
// CAs) plus any CA data the guest's context loaded.
func (s *Session) handshake(ctx context.Context, cn conn, p tlsParams) (*tls.Conn, *tlsInfo, error) {
	if r := s.checkServerName(cn, p.ServerHostname); r != nil {
		return nil, nil, r
	}
	cfg, err := s.tlsConfig(p)
	if err != nil {
		return nil, nil, err
	}
	tc := tls.Client(cn.raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, tlsError(ctx, err, p.ServerHostname)
	}
	return tc, describeTLS(tc.ConnectionState(), !p.Insecure), nil
}

// checkServerName keeps TLS from naming a host other than the one
// connected to, unless the policy allows that name too: the server name
// picks the virtual host, so it is part of where the code goes.
func (s *Session) checkServerName(cn conn, name string) *RefusalError {
	if name == "" {
		return nil
	}
	t, err := parseTarget(name)
	if err != nil {
		return refuse(ErrNotAllowed, name, "TLS server name: "+err.Error())
	}
	if t == cn.host || t.ip.IsValid() && t.ip.Unmap() == cn.peer.Addr() {
		return nil
	}
	if r := s.pol.checkHost(t, cn.port); r != nil {
		r.Reason = "TLS server name: " + r.Reason
		return r
	}
	return nil
}

func (s *Session) tlsConfig(p tlsParams) (*tls.Config, error) {
	roots := s.g.roots
	if p.CAData != "" {
		var err error
		if roots, err = s.caPool(p.CAData); err != nil {
			return nil, err
		}
	}
	cfg := &tls.Config{RootCAs: roots, NextProtos: p.ALPN, MinVersion: tls.VersionTLS12}
	if p.MinVersion > tls.VersionTLS12 && p.MinVersion <= tls.VersionTLS13 {
		cfg.MinVersion = p.MinVersion
	}
	if p.MaxVersion != 0 {
		if p.MaxVersion < tls.VersionTLS12 {
			return nil, guestError(errSSL, "[SSL: NO_PROTOCOLS_AVAILABLE] only TLS 1.2 and 1.3 are available")
		}
		cfg.MaxVersion = min(p.MaxVersion, tls.VersionTLS13)
	}
	name := strings.TrimSuffix(p.ServerHostname, ".")
	cfg.ServerName = name // SNI; crypto/tls leaves it out for an address
	switch {
	case p.Insecure:
		cfg.InsecureSkipVerify = true
	case p.NoCheckHostname:
		// Verify the chain, not the name: crypto/tls has no such mode, so
		// skip its verification and do the chain part here.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	case name == "":
		return nil, guestError(errInvalidInput, "check_hostname requires server_hostname")
	}
	return cfg, nil
}

// caPool is the gateway's roots plus a guest context's CA data, cached by
// content so that a context reused for many connections is parsed once.
func (s *Session) caPool(pemData string) (*x509.CertPool, error) {
	if len(pemData) > maxCAData {
		return nil, guestError(errSSL, "[SSL] CA data of %d bytes exceeds the %d-byte limit", len(pemData), maxCAData)
	}
	key := sha256.Sum256([]byte(pemData))
	s.mu.Lock()
	pool, ok := s.caPools[key]
	s.mu.Unlock()
	if ok {
		return pool, nil
	}
	pool = s.g.roots.Clone()
	if !pool.AppendCertsFromPEM([]byte(pemData)) {
		return nil, guestError(errSSL, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate in the CA data")
	}
	s.mu.Lock()
	if len(s.caPools) < maxCAPools {
		s.caPools[key] = pool
	}
	s.mu.Unlock()
	return pool, nil
}

// tlsError types a handshake failure; verification failures read like
// OpenSSL's, which is what Python code (and its authors) expect.
func tlsError(ctx context.Context, err error, name string) error {
	var (
		host    x509.HostnameError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
	)
	reason := ""
	switch {
	case errors.As(err, &host):
		what := "Hostname"
		if t, perr := parseTarget(name); perr == nil && t.ip.IsValid() {
			what = "IP address"
		}
		reason = fmt.Sprintf("%s mismatch, certificate is not valid for %s.", what, quote(name))
	case errors.As(err, &unknown):
		reason = "unable to get local issuer certificate"
		if c := unknown.Cert; c != nil && c.Issuer.String() == c.Subject.String() {
			reason = "self-signed certificate"
		}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		reason = "certificate has expired"
		if c := invalid.Cert; c != nil && time.Now().Before(c.NotBefore) {
			reason = "certificate is not yet valid"
		}
	case errors.As(err, &invalid), errors.As(err, &verify):
		reason = "certificate verify failed"
	}
	if reason != "" {
		return guestError(errSSLVerify, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: %s (%v)", reason, err)
	}
	switch {
	case isTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return guestError(errTimeout, "timed out during the TLS handshake with %s", quote(name))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return guestError(errSSLEOF, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol during the handshake")
	}
	if a := tlsAlert(err); a != "" {
		return guestError(errSSL, "[SSL] handshake failed: %s", a)
	}
	return guestError(errSSL, "[SSL] handshake failed: %v", err)
}

// tlsAlert names a TLS protocol error, or returns "" for other errors.
func tlsAlert(err error) string {
	var alert tls.AlertError
	var rec tls.RecordHeaderError
	switch {
	case errors.As(err, &alert):
		return "alert: " + alert.Error()
	case errors.As(err, &rec):
		return "WRONG_VERSION_NUMBER: " + rec.Msg
	case strings.HasPrefix(err.Error(), "tls: "), strings.Contains(err.Error(), "remote error: tls"):
		return err.Error()
	}
	return ""
}

// describeTLS summarises an established session for the guest (version(),
// cipher(), getpeercert()). Like Python, the decoded certificate is only
// given when it was verified.
func describeTLS(cs tls.ConnectionState, verified bool) *tlsInfo {
	info := &tlsInfo{
		Version: map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[cs.Version],
		Cipher:  tls.CipherSuiteName(cs.CipherSuite),
		ALPN:    cs.NegotiatedProtocol,
	}
	switch {
	case strings.Contains(info.Cipher, "AES_128"):
		info.Bits = 128
	case strings.Contains(info.Cipher, "AES_256"), strings.Contains(info.Cipher, "CHACHA20"):
		info.Bits = 256
	}
	if len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		info.CertDER = leaf.Raw
		if verified {
			info.Cert = describeCert(leaf)
		}
	}
	return info
}

// peerCert is the subset of ssl.SSLSocket.getpeercert()'s dictionary that
// clients use. Names are lists of relative distinguished names, each a
// list of [attribute, value] pairs, as in Python (tuples there).
type peerCert struct {
	Subject        [][][2]string `json:"subject"`
	Issuer         [][][2]string `json:"issuer"`
	Version        int           `json:"version"`
	SerialNumber   string        `json:"serialNumber"`
	NotBefore      string        `json:"notBefore"`
	NotAfter       string        `json:"notAfter"`
	SubjectAltName [][2]string   `json:"subjectAltName,omitempty"`
}

func describeCert(c *x509.Certificate) *peerCert {
	pc := &peerCert{
		Subject:      rdns(c.Subject),
		Issuer:       rdns(c.Issuer),
		Version:      c.Version,
		SerialNumber: strings.ToUpper(c.SerialNumber.Text(16)),
		// OpenSSL's format, which ssl.cert_time_to_seconds parses.
		NotBefore: c.NotBefore.UTC().Format("Jan _2 15:04:05 2006 GMT"),
		NotAfter:  c.NotAfter.UTC().Format("Jan _2 15:04:05 2006 GMT"),
	}
	for _, n := range c.DNSNames {
		pc.SubjectAltName = append(pc.SubjectAltName, [2]string{"DNS", n})
	}
	for _, ip := range c.IPAddresses {
		pc.SubjectAltName = append(pc.SubjectAltName, [2]string{"IP Address", ip.String()})
	}
	for _, e := range c.EmailAddresses {
		pc.SubjectAltName = append(pc.SubjectAltName, [2]string{"email", e})
	}
	for _, u := range c.URIs {
		pc.SubjectAltName = append(pc.SubjectAltName, [2]string{"URI", u.String()})
	}
	return pc
}

// rdns renders a name with OpenSSL's long attribute names.
func rdns(n pkix.Name) [][][2]string {
	long := map[string]string{
		"2.5.4.3": "commonName", "2.5.4.5": "serialNumber", "2.5.4.6": "countryName",
		"2.5.4.7": "localityName", "2.5.4.8": "stateOrProvinceName", "2.5.4.9": "streetAddress",
		"2.5.4.10": "organizationName", "2.5.4.11": "organizationalUnitName", "2.5.4.17": "postalCode",
		"1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "domainComponent",
	}
	out := make([][][2]string, 0, len(n.Names))
	for _, atv := range n.Names {
		key := atv.Type.String()
		if l, ok := long[key]; ok {
			key = l
		}
		out = append(out, [][2]string{{key, fmt.Sprint(atv.Value)}})
	}
	return out
}
