terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Version 20 of the EKS module supports the 5.x provider line only.
      version = "5.100.0"
    }
  }
}
