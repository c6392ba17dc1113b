package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// maxCredentialLine bounds one line of a credentials file; a JWT with many claims fits easily.
const maxCredentialLine = 64 << 10

// credential is what one client presents. secret is a token or a password; it is never printed.
type credential struct {
	username string
	secret   string
}

// credentials hands out credential i; with fewer entries than clients they are reused round-robin.
type credentials struct {
	kind     string // "tokens", "users" or "none"
	list     []credential
	template string
}

func loadCredentials(c *config) (*credentials, error) {
	switch {
	case c.TokensFile != "":
		list, err := readCredentialFile(c.TokensFile, func(i int, line string) (credential, error) {
			if user, token, ok := strings.Cut(line, "\t"); ok {
				if user == "" || token == "" {
					return credential{}, fmt.Errorf("want \"user<TAB>token\"")
				}
				return credential{username: user, secret: token}, nil
			}
			return credential{username: expandIndex(c.UsernameTemplate, i), secret: line}, nil
		})
		return &credentials{kind: "tokens", list: list}, err
	case c.UsersFile != "":
		list, err := readCredentialFile(c.UsersFile, func(_ int, line string) (credential, error) {
			user, password, ok := strings.Cut(line, ":")
			if !ok || user == "" {
				return credential{}, fmt.Errorf("want \"user:password\"")
			}
			return credential{username: user, secret: password}, nil
		})
		return &credentials{kind: "users", list: list}, err
	}
	return &credentials{kind: "none", template: c.UsernameTemplate}, nil
}

// readCredentialFile parses non-empty, non-comment lines; errors name file and line but never echo the line.
func readCredentialFile(path string, parse func(index int, line string) (credential, error)) ([]credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxCredentialLine)
	var list []credential
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cr, err := parse(len(list), line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		list = append(list, cr)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: no credentials", path)
	}
	return list, nil
}

// get returns credential i. Without a file the username still follows the template so that topics under
// users/<username>/ stay per client; nothing is sent as credentials then (see hasUsername).
func (cs *credentials) get(i int) credential {
	if cs.kind == "none" {
		return credential{username: expandIndex(cs.template, i)}
	}
	return cs.list[i%len(cs.list)]
}

// count is the number of distinct credentials, 0 without a file.
func (cs *credentials) count() int { return len(cs.list) }

// present reports whether CONNECT carries a username and secret.
func (cs *credentials) present() bool { return cs.kind != "none" }

func expandIndex(template string, i int) string {
	return strings.ReplaceAll(template, "%d", strconv.Itoa(i))
}

// expandTopic fills a topic template: %u username, %i index, %r run id.
func expandTopic(template, username string, index int, runID string) string {
	return strings.NewReplacer("%u", username, "%i", strconv.Itoa(index), "%r", runID).Replace(template)
}
