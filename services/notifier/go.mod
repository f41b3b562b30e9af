module github.com/jobsys/jobs/services/notifier

go 1.26
