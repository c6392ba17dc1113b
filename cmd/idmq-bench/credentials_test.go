package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadCredentials(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config
		content string
		want    []credential // credentials 0..len-1, then 0 again proves reuse
	}{
		{
			name:    "tokens named by template",
			cfg:     config{UsernameTemplate: "dev-%d"},
			content: "# comment\ntokA\n\ntokB\r\n",
			want:    []credential{{"dev-0", "tokA"}, {"dev-1", "tokB"}},
		},
		{
			name:    "tokens with users",
			cfg:     config{UsernameTemplate: "unused-%d"},
			content: "alice\ttokA\nbob\ttokB\n",
			want:    []credential{{"alice", "tokA"}, {"bob", "tokB"}},
		},
		{
			name:    "users and passwords",
			cfg:     config{},
			content: "alice:pa:ss\nbob:\n",
			want:    []credential{{"alice", "pa:ss"}, {"bob", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			cfg := tt.cfg
			if strings.HasPrefix(tt.name, "users") {
				cfg.UsersFile = path
			} else {
				cfg.TokensFile = path
			}
			cs, err := loadCredentials(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !cs.present() || cs.count() != len(tt.want) {
				t.Fatalf("present %v count %d, want %d", cs.present(), cs.count(), len(tt.want))
			}
			for i, w := range tt.want {
				if got := cs.get(i); got != w {
					t.Errorf("credential %d = %+v, want %+v", i, got, w)
				}
			}
			if got := cs.get(len(tt.want)); got != tt.want[0] {
				t.Errorf("credential %d = %+v, want reuse of %+v", len(tt.want), got, tt.want[0])
			}
		})
	}
}

func TestLoadCredentialsWithoutFile(t *testing.T) {
	cs, err := loadCredentials(&config{UsernameTemplate: "bench-%d"})
	if err != nil {
		t.Fatal(err)
	}
	if cs.present() || cs.get(42) != (credential{username: "bench-42"}) {
		t.Errorf("present %v, credential 42 = %+v", cs.present(), cs.get(42))
	}
}

func TestLoadCredentialsErrorsNameLineNotSecret(t *testing.T) {
	tests := []struct {
		name, content, want string
		users               bool
	}{
		{name: "users line without colon", content: "alice:ok\nsecret-no-colon\n", want: ":2: want \"user:password\"", users: true},
		{name: "token line with empty user", content: "\tsecret-token\n", want: ":1: want \"user<TAB>token\""},
		{name: "empty file", content: "# nothing\n\n", want: "no credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			cfg := config{TokensFile: path}
			if tt.users {
				cfg = config{UsersFile: path}
			}
			_, err := loadCredentials(&cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want file name and %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestExpandTopic(t *testing.T) {
	if got := expandTopic("users/%u/in/%i/%r", "bob", 7, "abc"); got != "users/bob/in/7/abc" {
		t.Errorf("got %q", got)
	}
}
