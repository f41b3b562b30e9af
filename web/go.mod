module github.com/jobsys/jobs/web

go 1.26
