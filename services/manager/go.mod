module github.com/jobsys/jobs/services/manager

go 1.26
