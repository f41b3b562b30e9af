module github.com/jobsys/jobs/services/worker

go 1.26
