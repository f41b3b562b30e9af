package deploycheck

import (
	"os"
	"regexp"
	"strings"
)

// operations are what deploy/README.md must tell an operator, each as a
// pattern the README must match, and why.
var operations = []struct {
	pattern *regexp.Regexp
	why     string
}{
	{regexp.MustCompile(`docker service update --force`), "how to make Swarm restart tasks whose image and settings did not change"},
	{regexp.MustCompile(`(?i)digest`), "that a redeploy resolves each tag to a digest"},
	{regexp.MustCompile(`mongodump [^\n]*--db "\$\{MONGO_DB:-jobs\}"`), "a mongodump of the database the stack uses (MONGO_DB), not always jobs"},
	{regexp.MustCompile(`tar -xzf /backup/beanstalkd-`), "how to restore the beanstalkd binlog volume from its backup"},
	{regexp.MustCompile(`docker service logs`), "where the services' logs are read"},
	{regexp.MustCompile(`docker swarm init --force-new-cluster`), "how to recover when the swarm's managers lost their quorum"},
	{regexp.MustCompile(`docker swarm join-token manager`), "how to keep three managers"},
	{regexp.MustCompile(`chown -R 11300:11300`), "how to give an existing binlog volume to the queue's fixed uid"},
}

// staleClaims must not come back into the README.
var staleClaims = map[string]string{
	"leaves running tasks alone": "redeploying a tag resolves it to a digest again, so it does not leave tasks alone",
	"--db jobs ":                 "the database is MONGO_DB, not always jobs",
}

// checkOperations: the README says how to run the stack day to day, and
// names every file in deploy/.
func checkOperations(d *deployment) []string {
	readme, err := d.read("README.md")
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for _, op := range operations {
		if !op.pattern.MatchString(readme) {
			problems = append(problems, "deploy/README.md does not say "+op.why+" (no match for "+op.pattern.String()+")")
		}
	}
	for claim, why := range staleClaims {
		if strings.Contains(readme, claim) {
			problems = append(problems, "deploy/README.md says "+claim+": "+why)
		}
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return append(problems, err.Error())
	}
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "README.md" && !strings.Contains(readme, "`"+e.Name()+"`") {
			problems = append(problems, "deploy/README.md does not name deploy/"+e.Name())
		}
	}
	return problems
}
