module templatesrender

go 1.19
